"""The auto-grader: students' layer-API functions (layer-api.md), graded safely against cnnspec.api.

    from cnnspec.grade import init_assignment, load_assignment, grade
    init_assignment("hw")                                   # hw/assignment.toml, hw/layers.py, ...
    result = grade("hw/assignment.toml", "alice/layers.py", public_only=False)
    result.score, result.max_score

Modules: ``functions`` (the graded functions, the student template), ``assignment`` (the TOML),
``cases`` (inputs from seeds), ``sandbox``/``child``/``protocol`` (the untrusted side and the wire
between), ``checks`` (judging outputs), ``mutants`` (diagnosis), ``grader`` (one submission),
``network`` (network-level problems), ``design``/``design_child`` (design problems: a student's
.cnn file checked, trained in a sandboxed process, scored on held-out data), ``notebook``
(.ipynb submissions), ``exercise`` (a network per student, answer keys, Moodle XML, checking
answers), ``results``/``reports`` (text, Gradescope JSON, PrairieLearn JSON, JUnit), ``batch`` (a
folder of submissions to a gradebook), ``bundle`` (Gradescope zip, PrairieLearn question, student
bundle), ``otter`` (Otter-Grader test files), ``cli`` (``cnnspec grade ...``).

Names are imported on first use: ``cnnspec --help`` must not pay for NumPy or numba.
"""
__all__ = ["grade", "init_assignment", "load_assignment"]


def grade(assignment, submission, *, public_only: bool = False, reference=None):
    """Grade one submission file against an assignment (a path or an Assignment)."""
    from cnnspec.grade.assignment import Assignment, load_assignment
    from cnnspec.grade.grader import Grader

    if not isinstance(assignment, Assignment):
        assignment = load_assignment(assignment)
    return Grader(assignment, reference=reference, public_only=public_only).grade(submission)


def __getattr__(name):
    if name in ("init_assignment", "load_assignment"):
        from cnnspec.grade import assignment

        return getattr(assignment, name)
    raise AttributeError(f"module 'cnnspec.grade' has no attribute {name!r}")
