"""The framework floor: a hello-world Flask app served like Lineup.

``gunicorn -c python:benchmarks.floor_conf benchmarks.floor_app:app`` answers
``GET /recommendations`` with a small constant JSON body, so the only costs
left are gunicorn's, Flask's and the HTTP round trip: the ceiling Lineup can
approach, not pass.
"""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/recommendations")
def recommendations():
    """Answer with a constant body of about the size of a short list."""
    return jsonify(user_id="u-000042", strategy="personalised", items=[])
