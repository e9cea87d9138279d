"""The validation step's core (:func:`tasks.validate.run_validate` is the thin step around it).

- :mod:`chintox.validation.rules`: the row rules (one flag column each) and the quarantine decision;
- :mod:`chintox.validation.quarantine`: kept frames, quarantine records, counts that must add up;
- :mod:`chintox.validation.gx`: the Great Expectations suites over the same flags, and the Data Docs.
"""
