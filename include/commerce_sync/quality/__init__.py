"""Quality: Great Expectations suites as code, row quarantine and batch gates."""
