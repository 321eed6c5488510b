"""LineupTrainFlow: the daily training flow for Lineup's event recommender.

Run it with ``python service/training/flow.py --no-pylint run`` (the sample
world) or ``... run --interactions my.csv --items items.csv``. See
docs/training.md.
"""

from metaflow import FlowSpec, Parameter, card, schedule, step
from metaflow.exception import MetaflowException

from service.config import load as load_settings
from service.servable import SERVABLES

#: Read when the flow is run or deployed: a scheduled deployment bakes these in.
SETTINGS = load_settings()


class BadTrainingData(MetaflowException):
    """A training file is malformed: Metaflow prints the one-line cause, no traceback."""

    headline = "Bad training data"


class BadParameter(MetaflowException):
    """A flow parameter cannot be read: the run stops in ``start``, with one line."""

    headline = "Bad parameter"


@schedule(daily=True)
class LineupTrainFlow(FlowSpec):
    """Train, tune and evaluate the event recommender; store what the serving gate reads.

    1) start: load and validate the interactions and items CSVs, or generate
       the deterministic sample world when no file is given
    2) split: hold out enough evaluation users (a time window grown until it
       has ``min_eval_users``, else each user's last ``holdout_last``), carve
       the validation split from the training rows by the same rule (where
       it falls back to last-k, a time window of ``min_window_users`` asks the
       time question: beside last-k under a last-k holdout, alone under a
       time-window one), and set each searched servable's space (``--model``)
    3) train: foreach task, a coordinate descent over one servable's search
       space from its start (search.start; each task takes the axes in its
       own order), fitting and scoring on the validation split within
       ``search_seconds`` of CPU time (on ratings, not before one whole pass:
       ``search_passes``), one BLAS thread per task (service/training/search.py)
    4) join: pick the point with the best validation NDCG@10, of the default
       servable unless another's best beats it on every split by one user's
       hit (search.choose)
    5) evaluate: fit the chosen point and the popularity baseline on the
       training rows, score both on the holdout's users with bootstrap
       intervals, then refit the chosen point on all the data as the served
       ``model``, with the library versions and schema it is pickled with
    6) end: print a summary and draw the run's card (``card view <run id>/end``)

    Only ``start`` reads files, so every later step runs anywhere
    (``--with kubernetes``) and ``resume`` works from any step.
    """

    interactions = Parameter(
        "interactions", default=SETTINGS["TRAINING_INTERACTIONS"],
        help="Interactions CSV (user_id,item_id,timestamp[,weight][,interaction]), a local "
             "path or an s3:// URL (default: LINEUP_TRAINING_INTERACTIONS); empty generates "
             "the sample world")
    items = Parameter(
        "items", default=SETTINGS["TRAINING_ITEMS"],
        help="Optional items CSV (item_id,title,category,starts_at,city,performer,venue), "
             "a local path or an s3:// URL; empty means every item is always available")
    columns = Parameter(
        "columns", default="auto",
        help="How the files' columns map to Lineup's: 'auto' reads common names (userId, "
             "movieId, rating, ...), or file=lineup pairs, e.g. 'uid=user_id,mid=item_id'")
    seen_kinds = Parameter(
        "seen_kinds", default="purchase,rating",
        help="Interaction kinds that make an item seen (never recommended again); "
             "without an interaction column every row is seen")
    # The artifact ``as_of`` is the float epoch of the data's "now" (the gate's
    # contract), so the date parameter lives under another attribute name.
    world_date = Parameter(
        "as_of", default="",
        help="The sample world's date, YYYY-MM-DD (empty: today UTC); ignored with --interactions")
    seed = Parameter("seed", default=0, type=int,
                     help="Seed of the sample world, the search order, the model and the bootstrap")
    sample_users = Parameter("sample_users", default=20_000, type=int,
                             help="Users in the sample world")
    sample_events = Parameter("sample_events", default=5_000, type=int,
                              help="Events listed in the sample world as of its date")
    sample_interactions = Parameter("sample_interactions", default=500_000, type=int,
                                    help="Interactions in the sample world's history")
    holdout_days = Parameter("holdout_days", default=7.0, type=float,
                             help="First size of the held-out time window, in days (it doubles "
                                  "until it has min_eval_users)")
    model_kind = Parameter(
        "model", default="auto",
        help=f"The servables to search, by their registered names ({', '.join(SERVABLES)}), "
             f"comma-separated; 'auto': every one on ratings, the event model alone where "
             f"items have start times")
    min_eval_users = Parameter("min_eval_users", default=500, type=int,
                               help="Evaluation users the holdout (and validation) should have")
    holdout_last = Parameter("holdout_last", default=5, type=int,
                             help="k of the per-user fallback: each user's last k seen rows")
    min_window_users = Parameter("min_window_users", default=50, type=int,
                                 help="Beside a last-k holdout, also validate on a time window "
                                      "grown to this many users, when one within "
                                      "max_holdout_share reaches them")
    max_holdout_share = Parameter("max_holdout_share", default=0.25, type=float,
                                  help="Largest share of the rows a time window may hold out")
    grid = Parameter("grid", default="16,32,64,128",
                     help="Comma-separated n_components (SVD rank) to search")
    half_lives = Parameter("half_lives", default="auto",
                           help="Half-lives in days to search ('inf': no decay); 'auto': those "
                                "of 7,14,30,90,365,1461 shorter than the data, and inf")
    user_half_lives = Parameter("user_half_lives", default="inf,3,10,30",
                                help="Half-lives counted in each user's later interactions to "
                                     "search ('inf': off)")
    user_decay_floors = Parameter("user_decay_floors", default="0.1,0.3",
                                  help="Shares of an old interaction's weight the user "
                                       "half-life keeps, to search (0: it fades away)")
    popularity_weights = Parameter("popularity_weights", default="0,0.1,0.3,1",
                                   help="Popularity prior weights to search")
    count_exponents = Parameter("count_exponents", default="auto",
                                help="Exponents of the item-count damping to search (each "
                                     "column scaled by count ** -e; 0: none); 'auto': "
                                     "0,0.2,0.35,0.5, or the model's own where items have "
                                     "start times")
    weightings = Parameter("weightings", default="raw,log,binary",
                           help="Interaction weightings to search: raw strength, log, binary")
    shrinkages = Parameter("shrinkages", default="0,20,100,500",
                           help="Item-to-item similarity shrinkages to search (item_knn: "
                                "co-occurrence / (norms' product + shrinkage))")
    neighbours = Parameter("neighbours", default="50,200",
                           help="Neighbours kept per item to search (item_knn)")
    l2s = Parameter("l2s", default="30,100,300,1000",
                    help="Ridge penalties of the item weights to search (ease)")
    search_users = Parameter("search_users", default=5000, type=int,
                             help="Validation users the search scores each point on (a seeded "
                                  "sample when there are more); the holdout scores all of its")
    search_tasks = Parameter("search_tasks", default=2, type=int,
                             help="Parallel search tasks (foreach), each with one BLAS thread")
    search_seconds = Parameter("search_seconds", default=10.0, type=float,
                               help="Time budget of each search task, in seconds of its own "
                                    "CPU time (other load does not shrink the search)")
    search_passes = Parameter("search_passes", default="auto",
                              help="Whole passes over the axes each search task completes "
                                   "before its time budget may stop it; 'auto': one on ratings "
                                   "(items without start times), none where items expire")

    @step
    def start(self):
        """Load and validate the data (or generate the sample world) and fingerprint it."""
        import datetime as dt
        import hashlib
        import logging
        import math

        import numpy as np

        from service.contract import iso_timestamp
        from service.training import csv_files, data, sample_data, search

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        try:  # before the data is read: a typo costs a second, not a run
            search.servables(self.model_kind, items_expire=False)
            self._axes(span_days=math.inf, items_expire=False, count_default=0.0)
            self._passes(items_expire=False)
        except ValueError as error:
            raise BadParameter(str(error)) from None
        if self.interactions:
            try:
                with csv_files.local_copies(self.interactions, self.items) as (interactions, items):
                    columns = csv_files.parse_columns(self.columns)
                    kinds = tuple(kind for kind in self.seen_kinds.split(",") if kind.strip())
                    self.log = data.load_interactions(interactions, columns, kinds)
                    self.catalogue = data.load_items(items, columns) if items else None
                    digest = hashlib.sha256()
                    for path in filter(None, (interactions, items)):
                        with open(path, "rb") as handle:
                            for block in iter(lambda: handle.read(1 << 20), b""):
                                digest.update(block)
            except csv_files.DataError as error:
                raise BadTrainingData(str(error)) from None
            source = ",".join(filter(None, (self.interactions, self.items)))
            # "Now" is just after the last interaction of a real data set.
            self.as_of = float(self.log.timestamp.max()) + 1.0
        else:
            day = dt.date.fromisoformat(self.world_date) if self.world_date else (
                dt.datetime.now(dt.timezone.utc).date())
            self.log, self.catalogue = sample_data.generate(
                day, self.seed, self.sample_users, self.sample_events, self.sample_interactions)
            digest = hashlib.sha256()
            for array in (self.log.user_codes, self.log.item_codes, self.log.timestamp,
                          self.log.weight, self.log.seen):
                digest.update(np.ascontiguousarray(array).tobytes())
            source = (f"sample world as of {day.isoformat()}, seed {self.seed}, "
                      f"{self.sample_users} users, {self.sample_events} events")
            self.as_of = float((day - dt.date(1970, 1, 1)).days * 86_400)
        self.data_fingerprint = {
            "interactions": len(self.log),
            "seen": int(self.log.seen.sum()),
            "users": int(np.unique(self.log.user_codes).size),
            "items": int(np.unique(self.log.item_codes).size),
            "first_timestamp": iso_timestamp(float(self.log.timestamp.min())),
            "last_timestamp": iso_timestamp(float(self.log.timestamp.max())),
            "sha256": digest.hexdigest(),
            "source": source,
        }
        print(f"Loaded {self.data_fingerprint}")
        self.next(self.split)

    @step
    def split(self):
        """Hold out enough evaluation users, carve the validation split, score the defaults."""
        import functools

        import numpy as np

        from service.servable import servable_class
        from service.training import evaluation, protocol, search

        test = protocol.choose(self.log, self.as_of, holdout_days=self.holdout_days,
                               min_users=self.min_eval_users, k=self.holdout_last,
                               max_share=self.max_holdout_share)
        if not test.truth:
            raise ValueError(f"no known user saw anything new in the holdout "
                             f"({test.description}); cannot evaluate")
        splits = protocol.validations(
            test, holdout_days=self.holdout_days, min_users=self.min_eval_users,
            k=self.holdout_last, max_share=self.max_holdout_share,
            min_window_users=self.min_window_users)
        validation = splits[0]
        if not validation.truth:
            raise ValueError(f"no known user saw anything new in the validation split "
                             f"({validation.description}); cannot tune")
        self.train_log, self.truth, self.holdout_start = test.train, test.truth, test.as_of
        # (training rows, sampled truth, as_of) of each split the search scores a point on.
        self.validation_splits = [
            (split.train, evaluation.sample_users(split.truth, self.search_users, self.seed),
             split.as_of) for split in splits]
        self.evaluation_protocol = dict(test.description, validation=dict(
            validation.description, scored_users=len(self.validation_splits[0][1])),
            **{"also_validated_on": split.description for split in splits[1:]})
        self.golden_users = evaluation.golden_users(self.truth, 50, self.seed)
        span_days = (float(validation.train.timestamp.max())
                     - float(validation.train.timestamp.min())) / 86_400.0
        items_expire = self.catalogue is not None and bool(
            np.isfinite(self.catalogue.starts_at).any())
        # Per servable, the axes it has; each foreach task walks one servable's
        # axes from its start (search.start), in its own order.
        self.search_min_passes = self._passes(items_expire)
        self.search_spaces, self.search_starts, self.grid_points = {}, {}, []
        for servable in search.servables(self.model_kind, items_expire):
            defaults = servable_class(servable)().get_params()
            space = {axis: values for axis, values in self._axes(
                span_days, items_expire, defaults.get("count_exponent", 0.0)).items()
                if axis in defaults}
            self.search_spaces[servable] = space
            self.search_starts[servable] = search.timed(
                functools.partial(self._score, servable),
                search.start(defaults, space, items_expire))
            self.grid_points += [(servable, order)
                                 for order in search.orders(space, self.search_tasks)]
        print(f"protocol {self.evaluation_protocol}")
        print(f"search {self.search_spaces} from {self.search_starts} in "
              f"{len(self.grid_points)} tasks of {self.search_seconds:g} s "
              f"(whole passes before the budget stops a walk: {self.search_min_passes})")
        self.next(self.train, foreach="grid_points")

    @step
    def train(self):
        """Search one servable's space from its start (axes in this task's order)."""
        import functools

        from service.contract import PRIMARY_METRIC
        from service.training import search

        servable, order = self.input
        self.results = [{"model": servable, **result} for result in search.run(
            self.search_spaces[servable], self.search_starts[servable], order,
            functools.partial(self._score, servable), self.search_seconds, PRIMARY_METRIC,
            self.search_min_passes)]
        for result in self.results:
            print(result)
        self.next(self.join)

    @step
    def join(self, inputs):
        """Pick the servable and point by validation NDCG@10 (service/training/search.py)."""
        from service.contract import PRIMARY_METRIC
        from service.training import search

        spaces = inputs[0].search_spaces
        scored = [{"model": servable, **start}
                  for servable, start in inputs[0].search_starts.items()]
        scored += [result for i in inputs for result in i.results]
        unique = {(result["model"], *(result[axis] for axis in spaces[result["model"]])): result
                  for result in scored}
        self.search_results = list(unique.values())
        best = search.choose(self.search_results, PRIMARY_METRIC)
        self.model_class = best["model"]
        self.search_space = spaces[self.model_class]
        self.best_params = {axis: best[axis] for axis in self.search_space}
        print(f"searched {len(self.search_results)} points; best {self.model_class} "
              f"{self.best_params}: validation NDCG@10 {best[PRIMARY_METRIC]:.4f}")
        # Everything else came unchanged from split: carry it forward.
        self.merge_artifacts(inputs, exclude=["results"])
        self.next(self.evaluate)

    @step
    def evaluate(self):
        """Score the chosen point and popularity on the holdout's users; refit on all data.

        Both are fitted on the training rows (the validation rows included, the
        holdout not), so ``holdout_metrics`` measure a choice the holdout never
        saw. The served model is refitted on everything, so it knows the newest
        items and users; ``self.truth`` and ``golden_users`` are still here.
        """
        from service import contract
        from service.recommender import PopularityRecommender
        from service.servable import servable_class
        from service.training import bootstrap, evaluation
        from service.training.probes import build_probes

        model = evaluation.scoring_model(self.model_class, self.best_params, self.seed).fit(
            self.train_log, items=self.catalogue)
        baseline = PopularityRecommender().fit(self.train_log, items=self.catalogue)
        model_users = evaluation.per_user_metrics(model, self.truth, self.holdout_start)
        base_users = evaluation.per_user_metrics(baseline, self.truth, self.holdout_start)
        self.holdout_metrics = evaluation.summarise(model, model_users, self.holdout_start)
        self.baseline_metrics = evaluation.summarise(baseline, base_users, self.holdout_start)
        paired = [{key: users[key] for key in evaluation.INTERVAL_METRICS}
                  for users in (model_users, base_users)]
        self.holdout_intervals = bootstrap.mean_intervals(paired[0], seed=self.seed)
        self.baseline_difference = bootstrap.paired_difference(*paired, seed=self.seed)
        self.model = servable_class(self.model_class)(
            **self.best_params, random_state=self.seed).fit(self.log, items=self.catalogue)
        # Recorded by the process that pickles the model: the gate compares them
        # with its own before it loads it (sanity_tests/integrity.py).
        self.library_versions = contract.library_versions()
        self.schema_version = self.model.SCHEMA_VERSION
        # What the gate recomputes on the artifact it loads (service/training/probes.py).
        self.gate_probes = build_probes(self.model, self.log, self.golden_users)
        # The big inputs are not needed downstream; keep the datastore small.
        self.train_log = self.validation_splits = self.truth = None
        self.next(self.end)

    def _axes(self, span_days: float, items_expire: bool, count_default: float) -> dict:
        """Return every search axis's values, parsed from the parameters (servables keep theirs).

        A value that does not parse raises ValueError naming the parameter.
        """
        from service.training import search

        parsed = self._parsed
        return {
            "half_life_days": parsed("half_lives", search.half_lives, span_days),
            "user_half_life": parsed("user_half_lives", search.parse_list),
            "user_decay_floor": parsed("user_decay_floors", search.parse_list),
            "popularity_weight": parsed("popularity_weights", search.parse_list),
            "count_exponent": parsed("count_exponents", search.count_exponents, items_expire,
                                     count_default),
            "n_components": parsed("grid", search.parse_list, int),
            "weighting": parsed("weightings", search.weightings),
            "shrinkage": parsed("shrinkages", search.parse_list),
            "n_neighbors": parsed("neighbours", search.parse_list, int),
            "l2": parsed("l2s", search.parse_list)}

    def _passes(self, items_expire: bool) -> int:
        """Return the passes each search task completes before its budget may stop it."""
        from service.training import search

        return self._parsed("search_passes", search.min_passes, items_expire)

    def _parsed(self, name, parse, *args):
        """Return ``parse(--name, *args)``; a ValueError names the parameter and its value."""
        text = getattr(self, name)
        try:
            return parse(text, *args)
        except ValueError as error:
            raise ValueError(f"--{name} {text!r}: {error}") from None

    def _score(self, servable, point):
        """Fit ``point`` of ``servable`` on each validation split's training rows; combine."""
        from service.training import evaluation

        return evaluation.combined([evaluation.ranking_metrics(
            evaluation.scoring_model(servable, point, self.seed).fit(
                train, items=self.catalogue), truth, as_of)
            for train, truth, as_of in self.validation_splits])

    @card(type="blank", id="training")
    @step
    def end(self):
        """Print the chosen parameters and holdout NDCG@10s; draw the run's card."""
        from service.training import card as training_card

        training_card.attach(self)
        model, base = self.holdout_metrics["ndcg@10"], self.baseline_metrics["ndcg@10"]
        low, high = self.holdout_intervals["ndcg@10"]
        diff = self.baseline_difference["ndcg@10"]
        print(f"best {self.best_params}: holdout NDCG@10 {model:.4f} [{low:.4f}, {high:.4f}] "
              f"vs popularity {base:.4f}; difference {diff['mean']:+.4f} "
              f"[{diff['low']:+.4f}, {diff['high']:+.4f}] on {self.evaluation_protocol}")


if __name__ == "__main__":
    # Metaflow names a flow after its class: LINEUP_FLOW_NAME renames it, so
    # the trainer writes the runs the service reads.
    type(SETTINGS["FLOW_NAME"], (LineupTrainFlow,), {"__doc__": LineupTrainFlow.__doc__})()
