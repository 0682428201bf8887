# Prepended (not appended) by the tests: the process ends before anything is defined.
import os

os._exit(0)
