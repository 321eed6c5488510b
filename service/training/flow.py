"""LineupTrainFlow: the daily training flow for Lineup's event recommender.

Run it with ``python service/training/flow.py --no-pylint run`` (the sample
world) or ``... run --interactions my.csv --items items.csv``. See
docs/training.md.
"""

from metaflow import FlowSpec, Parameter, schedule, step

from service.config import load as load_settings
from service.servable import DEFAULT_SERVABLE, SERVABLES

#: Read when the flow is run or deployed: a scheduled deployment bakes these in.
SETTINGS = load_settings()


@schedule(daily=True)
class LineupTrainFlow(FlowSpec):
    """Train, tune and evaluate the event recommender; store what the serving gate reads.

    1) start: load and validate the interactions and items CSVs, or generate
       the deterministic sample world when no file is given
    2) split: temporal holdout, the last ``holdout_days`` before ``as_of``
    3) train: fit one EventRecommender per grid point (foreach over
       ``n_components``) and score it on the holdout
    4) join: pick the grid point with the best holdout NDCG@10
    5) evaluate: score the popularity baseline on the same holdout, then refit
       the chosen parameters on all the data as the served ``model``
    6) end: print a summary

    Only ``start`` reads files, so every later step runs anywhere
    (``--with kubernetes``) and ``resume`` works from any step.
    """

    interactions = Parameter(
        "interactions", default=SETTINGS["TRAINING_INTERACTIONS"],
        help="Interactions CSV (user_id,item_id,timestamp[,weight]), a local path or an "
             "s3:// URL (default: LINEUP_TRAINING_INTERACTIONS); empty generates the sample world")
    items = Parameter(
        "items", default=SETTINGS["TRAINING_ITEMS"],
        help="Optional items CSV (item_id,title,category,starts_at,city,performer,venue), "
             "a local path or an s3:// URL; empty means every item is always available")
    # The artifact ``as_of`` is the float epoch of the data's "now" (the gate's
    # contract), so the date parameter lives under another attribute name.
    world_date = Parameter(
        "as_of", default="",
        help="The sample world's date, YYYY-MM-DD (empty: today UTC); ignored with --interactions")
    seed = Parameter("seed", default=0, type=int, help="Seed of the sample world and the model")
    sample_users = Parameter("sample_users", default=20_000, type=int,
                             help="Users in the sample world")
    sample_events = Parameter("sample_events", default=5_000, type=int,
                              help="Events listed in the sample world as of its date")
    sample_interactions = Parameter("sample_interactions", default=500_000, type=int,
                                    help="Interactions in the sample world's history")
    holdout_days = Parameter("holdout_days", default=7.0, type=float,
                             help="Days at the end of the data held out for evaluation")
    model_kind = Parameter(
        "model", default=DEFAULT_SERVABLE,
        help=f"The servable to train, by its registered name ({', '.join(SERVABLES)})")
    grid = Parameter("grid", default="16,32,64",
                     help="Comma-separated n_components to try (keep it to 3-4 points)")

    @step
    def start(self):
        """Load and validate the data (or generate the sample world) and fingerprint it."""
        import datetime as dt
        import hashlib
        import numpy as np

        from service import contract
        from service.contract import iso_timestamp
        from service.servable import servable_class
        from service.training import data, sample_data

        if self.interactions:
            with data.local_copies(self.interactions, self.items) as (interactions, items):
                self.log = data.load_interactions(interactions)
                self.catalogue = data.load_items(items) if items else None
                digest = hashlib.sha256()
                for path in filter(None, (interactions, items)):
                    with open(path, "rb") as handle:
                        for block in iter(lambda: handle.read(1 << 20), b""):
                            digest.update(block)
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
                          self.log.weight):
                digest.update(np.ascontiguousarray(array).tobytes())
            source = (f"sample world as of {day.isoformat()}, seed {self.seed}, "
                      f"{self.sample_users} users, {self.sample_events} events")
            self.as_of = float((day - dt.date(1970, 1, 1)).days * 86_400)
        self.holdout_start = self.as_of - self.holdout_days * 86_400.0
        self.data_fingerprint = {
            "interactions": len(self.log),
            "users": int(np.unique(self.log.user_codes).size),
            "items": int(np.unique(self.log.item_codes).size),
            "first_timestamp": iso_timestamp(float(self.log.timestamp.min())),
            "last_timestamp": iso_timestamp(float(self.log.timestamp.max())),
            "sha256": digest.hexdigest(),
            "source": source,
        }
        self.library_versions = contract.library_versions()
        self.model_class = self.model_kind
        self.schema_version = servable_class(self.model_class).SCHEMA_VERSION
        print(f"Loaded {self.data_fingerprint}")
        self.next(self.split)

    @step
    def split(self):
        """Hold out the last holdout_days; the truth is each user's new purchases in it."""
        from service.training import evaluation

        self.train_log, holdout = evaluation.split_by_time(self.log, self.holdout_start)
        if len(self.train_log) == 0 or len(holdout) == 0:
            raise ValueError(f"the {self.holdout_days}-day holdout leaves {len(self.train_log)} "
                             f"training and {len(holdout)} holdout interactions; need both")
        self.truth = evaluation.holdout_truth(self.train_log, holdout)
        if not self.truth:
            raise ValueError("no known user purchased anything new in the holdout; "
                             "cannot evaluate")
        self.golden_users = evaluation.golden_users(self.truth, 50, self.seed)
        self.grid_points = [{"n_components": int(k)} for k in str(self.grid).split(",")
                            if k.strip()]
        print(f"{len(self.train_log)} training rows, {len(holdout)} holdout rows, "
              f"{len(self.truth)} holdout users")
        self.next(self.train, foreach="grid_points")

    @step
    def train(self):
        """Fit one grid point on the training rows and score it on the holdout."""
        from service.servable import servable_class
        from service.training import evaluation

        estimator = servable_class(self.model_class)()
        # A grid point sets what this servable has (each class declares its own).
        self.params = {name: value for name, value in dict(self.input, random_state=self.seed)
                       .items() if name in estimator.get_params()}
        model = estimator.set_params(**self.params).fit(self.train_log, items=self.catalogue)
        self.metrics = evaluation.ranking_metrics(model, self.truth, self.holdout_start)
        print(f"{self.params}: {self.metrics}")
        self.next(self.join)

    @step
    def join(self, inputs):
        """Pick the grid point with the best holdout NDCG@10 (ties: fewer components)."""
        from service.contract import METRIC_KEYS

        self.search_results = [dict(i.params, **i.metrics) for i in inputs]
        best = max(inputs, key=lambda i: (i.metrics["ndcg@10"], -i.params.get("n_components", 0)))
        self.best_params = dict(best.params)
        self.holdout_metrics = {key: best.metrics[key] for key in METRIC_KEYS}
        # Everything else came unchanged from split: carry it forward.
        self.merge_artifacts(inputs, exclude=["params", "metrics"])
        self.next(self.evaluate)

    @step
    def evaluate(self):
        """Score the popularity baseline on the holdout; refit the best params on all data.

        The holdout metrics are those of the chosen parameters fitted before the
        holdout; the served model is refitted on everything, holdout included,
        so it knows the newest events and users.
        """
        from service.contract import METRIC_KEYS
        from service.servable import servable_class
        from service.training import evaluation

        baseline = evaluation.baseline_metrics(
            self.train_log, self.truth, self.holdout_start, items=self.catalogue)
        self.baseline_metrics = {key: baseline[key] for key in METRIC_KEYS}
        self.model = servable_class(self.model_class)(**self.best_params).fit(
            self.log, items=self.catalogue)
        # The big inputs are not needed downstream; keep the datastore small.
        self.train_log = self.truth = None
        self.next(self.end)

    @step
    def end(self):
        """Print the chosen parameters and the model's and baseline's holdout NDCG@10."""
        model, base = self.holdout_metrics["ndcg@10"], self.baseline_metrics["ndcg@10"]
        print(f"best {self.best_params}: NDCG@10 {model:.4f} vs popularity {base:.4f} "
              f"({model / base if base else float('inf'):.2f}x)")


if __name__ == "__main__":
    # Metaflow names a flow after its class: LINEUP_FLOW_NAME renames it, so
    # the trainer writes the runs the service reads.
    type(SETTINGS["FLOW_NAME"], (LineupTrainFlow,), {"__doc__": LineupTrainFlow.__doc__})()
