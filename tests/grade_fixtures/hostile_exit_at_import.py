# Appended to solution.py by the tests: a hostile submission.
# Exits at the end of the import: everything above is defined, and is graded.
import sys

sys.exit(3)
