"""The paper's side of the project: its result tables (:mod:`.tables`, ``tables.yaml``), the
report that puts a user's runs beside them (:mod:`.report`, :mod:`.figures`), and training
curves (:mod:`.curves`)."""
