"""The MLflow peer: Lineup's trained recommender as an ``mlflow.pyfunc`` model.

Run with the benchmark's MLflow virtualenv (not Lineup's), which has Lineup
installed too so that the model's class imports::

    /tmp/lineup-bench-mlflow-venv/bin/python benchmarks/mlflow_model.py \\
        --model STATE_DIR/models/<run id>.joblib --out /tmp/somewhere/pyfunc

``predict`` takes a DataFrame with a ``user_id`` column and returns, per row,
the top ``n`` (10) items with their scores and the strategy, as Lineup does.
"""

from __future__ import annotations

import argparse

import mlflow.pyfunc

N = 10


class LineupPyfunc(mlflow.pyfunc.PythonModel):
    """Call ``EventRecommender.recommend`` for each user id of the input."""

    def load_context(self, context):
        """Load the fitted recommender from the joblib copy Lineup serves from."""
        import joblib

        self.model = joblib.load(context.artifacts["model"], mmap_mode="r")

    def predict(self, context, model_input, params=None):
        """Return one record per input row: user_id, strategy, item_ids, scores."""
        out = []
        for user_id in model_input["user_id"].astype(str):
            chosen = self.model.recommend(user_id, N)
            out.append({"user_id": user_id, "strategy": chosen.strategy,
                        "item_ids": chosen.item_ids.tolist(),
                        "scores": [round(s, 6) for s in chosen.scores.tolist()]})
        return out


def main() -> None:
    """Save the pyfunc model, with the joblib copy as its artifact."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a Lineup shared copy (.joblib)")
    parser.add_argument("--out", required=True, help="a folder that does not exist yet")
    args = parser.parse_args()
    mlflow.pyfunc.save_model(args.out, python_model=LineupPyfunc(),
                             artifacts={"model": args.model})


if __name__ == "__main__":
    main()
