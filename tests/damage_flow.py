"""A successful run carrying a good run's artifacts, with its model damaged after evaluation.

For the gate's tests only: the flow is named as the training flow
(``LINEUP_FLOW_NAME``), so the run is a candidate like any other, claims and
probes included, as a bug between evaluation and the stored model would
leave it.
"""

from metaflow import FlowSpec, Parameter, step

from service.config import load as load_settings

#: Artifacts not copied: Metaflow's own, and this flow's parameters.
_OWN = {"name", "source_run", "damage", "donor_run"}


class DamagedRunFlow(FlowSpec):
    """Copy a good run and damage its model.

    1) start: copy every artifact of ``source_run``, then replace ``model``
       by its damaged form (tests/flows.py ``damage_model``)
    2) end: nothing more
    """

    source_run = Parameter("source_run", help="Pathspec of the good run whose artifacts to copy")
    damage = Parameter("damage", help="The damage, one of tests.flows.DAMAGES")
    donor_run = Parameter("donor_run", default="",
                          help="Pathspec of the run whose model the 'other_data' damage stores")

    @step
    def start(self):
        """Copy the good run's artifacts and damage its model."""
        import metaflow

        from tests.flows import damage_model

        metaflow.namespace(None)
        for artifact in metaflow.Run(self.source_run)["end"].task:
            if not artifact.id.startswith("_") and artifact.id not in _OWN:
                setattr(self, artifact.id, artifact.data)
        donor = metaflow.Run(self.donor_run).data.model if self.donor_run else None
        self.model = damage_model(self.model, self.damage, log=self.log,
                                  catalogue=self.catalogue, donor=donor)
        self.next(self.end)

    @step
    def end(self):
        """Say what was damaged."""
        print(f"{self.source_run} with damage {self.damage}")


if __name__ == "__main__":
    # Metaflow names a flow after its class: take the training flow's name.
    type(load_settings()["FLOW_NAME"], (DamagedRunFlow,), {"__doc__": DamagedRunFlow.__doc__})()
