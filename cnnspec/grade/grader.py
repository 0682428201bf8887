"""Grading one submission: cases in, the sandbox's outputs judged against the reference.

    grader = Grader(load_assignment("hw/assignment.toml"))
    result = grader.grade(Path("alice/layers.py"))          # a GradeResult
    print(reports.text(result))

Everything that decides a score happens here, in the trusted process: the cases (from the public
seed, or the hidden seed derived from the assignment's secret), the reference's outputs, the
comparisons, the mutant diagnosis and the points. The sandbox only ever receives inputs.
"""
from __future__ import annotations

import builtins
import copy
import importlib
import math
import platform
import re
import stat
import time
from collections import Counter
from pathlib import Path

import numpy as np

from cnnspec.grade import mutants
from cnnspec.grade.assignment import CHECK_TITLES, Assignment, FunctionProblem
from cnnspec.grade.cases import Case, cast, make_cases
from cnnspec.grade.checks import (Bad, as_outputs, describe, float32_problem, nothing_computed, numpy_hint,
                                  output_problem, rel_error, shorten, squeezed_like, unwrap, upstream_scale,
                                  value_problem)
from cnnspec.grade.functions import FUNCTIONS, forward_of
from cnnspec.grade.design import grade_design, load_design_data
from cnnspec.grade.network import grade_network
from cnnspec.grade.notebook import NotebookError, notebook_code
from cnnspec.grade.results import CheckResult, GradeResult, ProblemResult
from cnnspec.grade.sandbox import Sandbox, SandboxError, line_text

MAX_STARTS = 25               # sandbox (re)starts per submission before the rest is not graded


class Runner:
    """A submission's sandbox for the length of one grading: started on demand, restarted after
    a crash or a timeout, given up when it cannot even import the file or when the submission's
    total time is spent (every call's timeout is cut to the time left)."""

    def __init__(self, sandbox: Sandbox, deadline: float | None = None, total_time: float | None = None):
        self.box = sandbox
        self.deadline = deadline      # time.monotonic() when the whole submission must be done
        self.total_time = total_time
        self.fatal = None             # why nothing more can run
        self.violations = []
        self.import_error = None
        self.unreadable = False       # a syntax error: nothing in the file could run
        self.import_output = None     # bytes printed before any case ran
        self.defined = None
        self.broken = {}              # function -> why it cannot be called (a timeout, a crash)
        self.wrong = set()            # functions whose outputs did not match the reference

    def out_of_time(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.fatal = self.fatal or self.time_message()
        return self.deadline is not None and time.monotonic() >= self.deadline

    def time_message(self) -> str:
        return f"the total time limit of {self.total_time:g} s for a submission was exceeded"

    def ensure(self) -> None:
        if self.out_of_time() or self.fatal:
            raise SandboxError("fatal", self.fatal)
        if self.box.alive:
            return
        if self.box.starts >= MAX_STARTS:
            self.fatal = f"the sandbox had to be restarted {MAX_STARTS} times"
            raise SandboxError("fatal", self.fatal)
        try:
            ready = self.box.start()
        except SandboxError as exc:
            self.fatal = "your file could not be imported"
            self.import_error = f"{self.fatal}: {exc.message}"
            raise SandboxError("fatal", self.fatal) from None
        # everything in a message from the child is checked before use: the submission ran there
        self._note(ready.get("violations"))
        error = ready.get("import_error")
        if self.import_error is None and isinstance(error, dict):
            line = f" at {line_text(error)}" if line_text(error) else ""
            self.unreadable = error.get("type") in ("SyntaxError", "IndentationError", "TabError")
            whole = ("Python reads the whole file" if self.box.code is None else
                     "the code cells are read as one module, all of them")
            rest = (f"{whole} before running it, so no function could be graded"
                    if error.get("type") in ("SyntaxError", "IndentationError", "TabError")
                    else "the functions defined before that point were graded")
            message = shorten(error.get("message"), 500)
            hint = numpy_hint(message)
            self.import_error = f"importing your file stopped{line}: {message}; {rest}" + (
                f" ({hint})" if hint else "")
        defined = ready.get("defined")
        self.defined = [d for d in defined if isinstance(d, str)] if isinstance(defined, list) else []
        if self.import_output is None:     # what the first import printed: no case has run yet
            self.import_output = self.box.output_size()

    def run(self, func: str, calls: list, timeout: float, hidden: bool = False) -> list:
        """The replies to ``calls``; ``hidden``: calls of a hidden case, whose refusals are
        noted without what they named (a path or an address can carry the case's values)."""
        self.ensure()
        left = self.deadline - time.monotonic() if self.deadline is not None else timeout
        try:
            reply = self.box.call(func, calls, min(timeout, left))
        except SandboxError as exc:
            if exc.kind == "timeout" and left < timeout:
                self.fatal = self.time_message()
                raise SandboxError("fatal", self.fatal) from None
            raise
        self._note(reply.get("violations"), hidden)
        return reply["replies"]

    def _note(self, violations, hidden: bool = False) -> None:
        for v in violations if isinstance(violations, list) else ():
            if isinstance(v, str) and hidden:      # its kind only, from a fixed set of words
                kind = next((k for k in ("forbidden import", "forbidden file access") if v.startswith(k)),
                            "a forbidden operation")
                v = f"{kind} (in a hidden case: what it named is not shown)"
            if isinstance(v, str) and v not in self.violations and len(self.violations) < 20:
                self.violations.append(shorten(v, 300))


def _link_problem(path: Path, root: Path | None) -> str | None:
    """Why the file to grade is not a file the student handed in: a symbolic link (to the grader's
    secret, the assignment or another student's file, which the grader, not the sandbox, would
    read and report errors from), in the student's folder or as the file itself; or not a regular
    file. None when it is one."""
    shown = str(path.relative_to(root)) if root is not None else path.name
    here = path
    while True:
        if here.is_symlink():
            where = "" if here == path else f" (`{here.relative_to(root)}` is one)"
            return (f"{shown} is a symbolic link{where}, not a file handed in: hand in the file itself")
        if root is None or here == root or here.parent == here:
            break
        here = here.parent
    try:
        mode = path.lstat().st_mode
    except OSError:
        return f"{shown} cannot be read"
    if not stat.S_ISREG(mode):
        return f"{shown} is not a regular file"
    return None


class Grader:
    """Grades submissions of one assignment (cases and reference outputs are computed once)."""

    def __init__(self, assignment: Assignment, *, reference=None, public_only: bool = False):
        self.assignment = assignment
        self.reference = reference if reference is not None else importlib.import_module("cnnspec.api")
        self.public_only = public_only
        self.hidden_seed = None if public_only else assignment.hidden_seed()
        self._cases = {}
        self._designs = {}

    # -- cases and expected values ------------------------------------------------------------
    def cases(self, problem: FunctionProblem) -> list[tuple[Case, tuple]]:
        """The problem's cases with the reference's outputs: public first, then hidden."""
        if problem.name not in self._cases:
            cases = make_cases(problem.name, self.assignment.public_seed, problem.public_cases,
                               "public", problem.edge_cases)
            if not self.public_only:
                cases += make_cases(problem.name, self.hidden_seed, problem.hidden_cases, "hidden",
                                    problem.edge_cases)
            reference = getattr(self.reference, problem.name)
            self._cases[problem.name] = [(case, as_outputs(reference(*copy.deepcopy(case.args))))
                                         for case in cases]
        return self._cases[problem.name]

    # -- one submission ---------------------------------------------------------------------------
    def grade(self, submission, *, display_name: str | None = None, trusted: bool = False) -> GradeResult:
        """Grade ``submission``: a layer file (``.py`` or ``.ipynb``), a design's ``.cnn`` file,
        or a student's folder holding them (what Gradescope and PrairieLearn hand over).
        ``trusted`` runs a layer file without the guard and the user switch: only for the
        project's own reference (self-tests)."""
        from cnnspec.grade.batch import find_design, find_submission

        submission = Path(submission)
        a = self.assignment
        shown = display_name or submission.name
        layers, why, designs, root = None, None, {}, None
        if submission.is_dir():
            root = submission
            if a.functions or a.networks:
                entry = find_submission(submission, a.submission)
                layers, why = entry.path, entry.why
            designs = {d.name: find_design(submission, d, a.designs) for d in a.designs}
            if layers is None and not any(path for path, _ in designs.values()):
                whys = [why] if why else []
                whys += [reason for path, reason in designs.values() if reason]
                return self.missing(shown, "; ".join(whys))
        elif submission.suffix.lower() == ".cnn":
            named = [d for d in a.designs if d.submission == submission.name] or a.designs[:1]
            designs = {d.name: (submission if d in named else None,
                                f"no {d.submission}: a single .cnn file was handed in") for d in a.designs}
            why = f"no {a.submission}: a .cnn file was handed in"
            if not a.designs:
                return self.missing(shown, f"a .cnn file was handed in, but this assignment grades {a.submission}")
        else:
            layers = submission
            designs = {d.name: (None, f"no {d.submission} (grade the student's folder to grade designs)")
                       for d in a.designs}
        for name, (path, _) in designs.items():
            link = path is not None and _link_problem(path, root)
            if link:
                designs[name] = (None, link)
        link = layers is not None and _link_problem(layers, root)
        if link:                     # not read; the designs beside it are graded all the same
            layers, why = None, link
        if layers is not None:
            if submission.is_dir():
                relative = layers.relative_to(submission)
                display_name = f"{display_name}/{relative}" if display_name else str(relative)
            result = self.grade_layers(layers, display_name=display_name, trusted=trusted)
        else:
            result = GradeResult(a.name, shown, self.public_only, environment=environment())
            for problem in a.functions:
                result.problems.append(self._not_graded(problem.name, "function", problem.points, f"not graded: {why}"))
            for problem in a.networks:
                result.problems.append(self._not_graded(problem.name, "network", problem.points, f"not graded: {why}"))
        started = time.monotonic()
        for problem in a.designs:
            path, reason = designs[problem.name]
            if path is None:
                result.problems.append(self._not_graded(problem.name, "design", problem.points,
                                                        f"not graded: {reason}"))
                continue
            result.problems.append(grade_design(self, problem, path, root=root,
                                                display=str(path.relative_to(root)) if root else path.name))
        result.seconds = round(result.seconds + time.monotonic() - started, 3)
        return result

    def design_data(self, problem):
        """A design's training and held-out samples (made once per grader)."""
        if problem.name not in self._designs:
            self._designs[problem.name] = load_design_data(self, problem)
        return self._designs[problem.name]

    def grade_layers(self, submission, *, display_name: str | None = None, trusted: bool = False) -> GradeResult:
        """Grade the layer file ``submission`` (``.py`` or ``.ipynb``): the function and network
        problems."""
        started = time.monotonic()
        submission = Path(submission)
        a = self.assignment
        result = GradeResult(a.name, display_name or submission.name, self.public_only)
        result.environment = environment()
        code = None
        if submission.suffix.lower() == ".ipynb":
            try:
                code = notebook_code(submission)
            except NotebookError as exc:
                return self.missing(display_name or submission.name, f"your notebook could not be read: "
                                    f"{exc.message}" + (f" ({exc.hint})" if exc.hint else ""),
                                    location=exc.line and f"line {exc.line}, column {exc.col}", designs=False)
            result.notices.append(code.summary())
        name = a.submission if display_name is None and code is None else Path(display_name or submission).name
        box = Sandbox(submission, limits=a.limits, forbidden=a.forbidden, display_name=name,
                      trusted=trusted, code=code)
        runner = Runner(box, started + a.limits.total_time, a.limits.total_time)
        try:
            for problem in a.functions:
                if runner.out_of_time():
                    result.problems.append(self._not_graded(problem.name, "function", problem.points,
                                                            f"not graded: {runner.fatal}"))
                    continue
                result.problems.append(self.grade_function(problem, runner))
            for problem in a.networks:
                if runner.out_of_time():
                    result.problems.append(self._not_graded(problem.name, "network", problem.points,
                                                            f"not graded: {runner.fatal}"))
                    continue
                result.problems.append(grade_network(self, problem, runner))
        finally:
            box.close()
        # printed output can carry hidden inputs: a grade with hidden cases shows only what the
        # import printed (a public-only grade shows everything)
        result.output = box.output(None if self.public_only else (runner.import_output or 0))
        result.violations = runner.violations
        result.import_error = runner.import_error
        result.unreadable = runner.unreadable
        result.sandbox_starts = box.starts
        result.seconds = round(time.monotonic() - started, 3)
        return result

    def missing(self, display_name: str, why: str, location: str | None = None,
                designs: bool = True) -> GradeResult:
        """The result of a submission without a file to grade (or with one that cannot be read):
        every problem scores zero, with ``why`` (which file was expected, which were found; what
        is wrong with it, at ``location``) as the report's message. ``designs``: the design
        problems too (else only the layer file's problems)."""
        a = self.assignment
        if location:
            why += f" (at {location})"
        result = GradeResult(a.name, display_name, self.public_only, environment=environment(), missing=why)
        reason = "not graded: no submission file" if "could not be read" not in why else \
            "not graded: the submission could not be read"
        for problem in a.functions:
            result.problems.append(self._not_graded(problem.name, "function", problem.points, reason))
        for problem in a.networks:
            result.problems.append(self._not_graded(problem.name, "network", problem.points, reason))
        for problem in a.designs if designs else ():
            result.problems.append(self._not_graded(problem.name, "design", problem.points, reason))
        return result

    @staticmethod
    def _not_graded(name, kind, points, why) -> ProblemResult:
        p = ProblemResult(name, kind, points, notes=[why])
        p.checks.append(CheckResult("graded", "graded", points, 0, 1, [why]))
        return p

    # -- one function ---------------------------------------------------------------------------
    def check_results(self, problem: FunctionProblem) -> dict:
        spec = FUNCTIONS[problem.name]
        keys = ["shape_dtype", "reference"]
        if spec.kind != "forward":
            keys.append("numeric")
        if problem.edge_cases:
            keys.append("edge")
        keys.append("inputs")
        weights = {k: self.assignment.checks.get(k, 0.0) for k in keys}
        total = sum(weights.values()) or 1.0
        titles = dict(CHECK_TITLES)
        if spec.forward:
            titles["numeric"] = f"agrees with the numerical gradient of your {spec.forward}"
        return {k: CheckResult(k, titles[k], problem.points * w / total)
                for k, w in weights.items() if w > 0}

    def grade_function(self, problem: FunctionProblem, runner: Runner) -> ProblemResult:
        started = time.monotonic()
        spec = FUNCTIONS[problem.name]
        result = ProblemResult(problem.name, "function", problem.points)
        checks = self.check_results(problem)
        state = _FunctionState()
        stop = None                   # why the remaining cases are not run
        limits = self.assignment.limits
        for case, expected in self.cases(problem):
            applicable = [k for k in checks if self._applies(k, case, spec)]
            if stop is None:
                called = time.perf_counter()
                try:
                    replies = [runner.run(spec.name, [list(args)], timeout=limits.time_per_case,
                                          hidden=case.visibility == "hidden")[0]
                               for args in (case.args, cast(case.args, np.float32))]
                except SandboxError as exc:
                    if exc.kind == "fatal":
                        stop = f"not graded: {exc.message}"
                        result.notes.append(stop)
                    else:                         # a hidden case: no exit status (the code
                        message = exc.message         # chooses it: it could carry the inputs)
                        if case.visibility == "hidden":
                            message = re.sub(r"exited with status \d+", "exited", message)
                            message = re.sub(r"killed by (?!SIGXCPU|SIGSEGV)\w+ \([^)]*\)",
                                             "killed by a signal", message)
                        stop = f"{message}, {case.label}"
                        result.notes.append(stop + "; the remaining cases of this function were not run")
                    runner.broken[spec.name] = stop
                else:
                    seconds = time.perf_counter() - called
                    checks["edge" if case.is_edge and "edge" in checks else
                           "reference" if "reference" in checks else next(iter(checks))].seconds += seconds
                    stop = self._judge_case(problem, spec, case, expected, replies, checks, applicable,
                                            state, runner)
                    if stop:
                        result.notes.append(stop)
                        if state.skipped:
                            for check in checks.values():
                                check.skipped = stop
                    continue
            for key in applicable:
                checks[key].record(False)
        for text, count in state.errors.most_common():
            result.notes.append(f"{text} [{_cases(count)}]")
        for hint in state.hints:
            result.notes.append(hint)
        for mutant, count in reversed(state.diagnoses.most_common()):
            reference = self.assignment.references.get(mutant.name)
            see = f" (see {reference})" if reference else ""
            result.notes.insert(0, f"{mutant.message}{see} [{_cases(count)}]")
        result.checks = list(checks.values())
        if any(not c.ok for c in result.checks if c.key in ("reference", "edge")):
            runner.wrong.add(spec.name)
        if spec.forward in runner.wrong and spec.forward not in runner.broken and state.disagreed:
            result.notes.append(f"Your {spec.forward} does not match the reference, so this backward "
                                f"cannot agree with its numerical gradient: fix {spec.forward} first")
        result.seconds = round(time.monotonic() - started, 3)
        return result

    @staticmethod
    def _applies(key, case, spec) -> bool:
        if key == "reference":
            return not case.is_edge
        if key == "edge":
            return case.is_edge
        if key == "numeric":
            return not case.is_edge and spec.kind != "forward"
        return True

    def _judge_case(self, problem, spec, case, expected, replies, checks, applicable, state,
                    runner) -> str | None:
        """Record this case in each applicable check; return a reason to stop grading the
        function (not defined, not implemented), else None.

        Credit goes to work done: the shape and inputs checks pay only alongside an output that
        computes something (right values, or wrong ones that are neither one value everywhere,
        nor an input unchanged, nor different for the same input); a hidden case's messages say
        only that it failed."""
        judged = time.perf_counter()
        hidden = case.visibility == "hidden"
        failed = f"{case.label}: failed"
        r64, r32 = (r if isinstance(r, dict) else {} for r in replies)
        status = r64.get("status")
        if status in ("missing", "not_implemented"):
            for key in applicable:
                checks[key].record(False)
            state.skipped = True
            return (f"{spec.name} is not defined in your file" if status == "missing" else
                    f"{spec.name} is not implemented (it raises NotImplementedError)")
        if status != "ok":
            state.errors[_error_text(r64, hidden)] += 1
            hint = numpy_hint(_error_message(r64)) or _stride_hint(spec, _error_message(r64))
            if hint and hint not in state.hints:
                state.hints.append(hint)
            for key in applicable:
                checks[key].record(False, failed if hidden else f"{case.label}: {_error_text(r64, False)}")
            return None

        for message in _list(r64.get("deprecations")):
            hint = numpy_hint(str(message), warning=True)
            if hint and hint not in state.hints:
                state.hints.append(hint)
        tol = problem.forward_tolerance if spec.kind == "forward" else problem.backward_tolerance
        outputs, whole = unwrap(r64.get("value"), spec.returns)
        ok32 = r32.get("status") == "ok"
        outputs32, whole32 = unwrap(r32.get("value"), spec.returns) if ok32 else ((None,) * len(spec.returns), None)
        args = dict(zip(spec.params, case.args))

        # the values, compared after squeezing axes of size 1: a shape slip costs the shape check only
        value_why, slips, nothing = ([whole] if whole else []), {}, []
        unreadable = bool(whole)              # an output that is not an array of comparable shape
        as_expected = [None] * len(spec.returns)     # the outputs, squeezed to the expected shapes
        # the outputs that count towards a case's partial credit (all but a None where None is
        # due), and those of them that are wrong
        counted = set() if whole else {n for n, g, e in zip(spec.returns, outputs, expected)
                                        if e is not None or g is not None}
        wrong = set()
        for i, (n, g, e, g32) in enumerate([] if whole else zip(spec.returns, outputs, expected, outputs32)):
            if e is None:
                if g is not None:
                    value_why.append(f"{n} should be None here (b is None)")
                    wrong.add(n)
                continue
            if g is None or isinstance(g, Bad):
                value_why.append(output_problem(n, g, e, np.float64))
                unreadable = True
                wrong.add(n)
                continue
            got = np.asarray(g) if isinstance(g, float) else g
            same = squeezed_like(got, e)
            if same is None:
                value_why.append(output_problem(n, g, e, np.float64) or f"{n} is {describe(g)}")
                unreadable = True
                wrong.add(n)
                continue
            as_expected[i] = same
            why = value_problem(n, same, e, tol, not hidden)
            if why:
                value_why.append(why)
                wrong.add(n)
                reason = nothing_computed(n, same, e, args, squeezed_like(g32, e))
                if reason:
                    nothing.append(reason)
            elif same.shape != got.shape:
                shown = "a number" if np.ndim(e) == 0 else f"{np.shape(e)}"
                slips[n] = (f"{n}: the values are right, but the shape is {got.shape}; expected {shown}"
                            if not hidden else f"{n}: the values are right, the shape is not")
        # the float32 call must compute the same function: compared with the reference run on the
        # same float32 inputs, at float32's precision (a float32 path that returns zeros, or the
        # float64 result of something else, was never compared before)
        if not value_why and ok32 and not whole32:
            expected32 = None
            for n, g32, e in zip(spec.returns, outputs32, expected):
                if e is None or g32 is None or isinstance(g32, Bad):
                    continue                      # None where None is due, or the shape check says why
                same32 = squeezed_like(np.asarray(g32) if isinstance(g32, float) else g32, e)
                if same32 is None:
                    continue
                if expected32 is None:
                    args32 = cast(case.args, np.float32)
                    reference = getattr(self.reference, spec.name)
                    expected32 = dict(zip(spec.returns, as_outputs(reference(*copy.deepcopy(args32)))))
                    floor = upstream_scale(spec, args32)
                why32 = float32_problem(n, same32, expected32.get(n), floor)
                if why32:
                    value_why.append(why32)
                    wrong.add(n)
        values_ok = not value_why
        # outputs right beside wrong ones (dx and dw right, db missing): the case earns their share
        # of the value check, and the shape and inputs checks may pay alongside them
        right = len(counted - wrong) if len(counted) > 1 else 0
        usable = values_ok or right > 0 or not (unreadable or nothing)

        if "shape_dtype" in checks:
            problems = []
            for outs, whole_, dtype in ((outputs, whole, np.float64), (outputs32, whole32, np.float32)):
                if dtype is np.float32 and not ok32:
                    problems.append("with float32 inputs: " + (
                        "it raised an error" if hidden else _error_text(r32, False)))
                    continue
                if whole_:
                    problems.append(whole_)
                    continue
                for n, g, e in zip(spec.returns, outs, expected):
                    if n in slips:
                        problems.append(slips[n])
                    else:
                        problems.append(output_problem(n, g, e, dtype))
            problems = list(dict.fromkeys(p for p in problems if p))
            if not problems and not usable:
                problems = nothing or ["no usable output"]
            passed = usable and not problems
            checks["shape_dtype"].record(passed, failed if hidden else f"{case.label}: {'; '.join(problems)}")

        value_key = "edge" if case.is_edge else "reference"
        if value_key in checks:
            why = value_why
            if why and not whole:
                mutant = mutants.diagnose(spec.name, self.reference, copy.deepcopy(case.args), outputs,
                                          expected, tol=max(1e-6, 10 * tol))
                if mutant is not None:
                    state.diagnoses[mutant] += 1
                    why = [f"matches the mistake '{mutant.name.replace('_', ' ')}' (see above)"]
                elif nothing:
                    why = nothing
            part = right / len(counted) if why and right else 0.0
            message = f"{case.label}: {'; '.join(why)}"
            if hidden:
                message = failed + (f" ({why[0]})" if why and why[0].startswith("matches the mistake") else "")
            if part:
                message += f" ({right} of {len(counted)} outputs right: {right}/{len(counted)} of the case's credit)"
            checks[value_key].record(not why, message, part=part)

        if "inputs" in checks:
            self._record_inputs(checks["inputs"], spec, case, (r64, r32), usable, failed if hidden else None)
        for key in ("shape_dtype", "inputs"):
            if key in checks:
                checks[key].seconds += (time.perf_counter() - judged) / 4
        if "numeric" in checks and "numeric" in applicable:
            numeric_started = time.perf_counter()
            # A backward equal to the reference's is the gradient of the right forward: it earns
            # this check even when the student's own forward is wrong (no penalty twice).
            if values_ok:
                checks["numeric"].record(True)
            else:
                ok, why, compared, part = self._numeric(problem, spec, case, expected, as_expected,
                                                        [] if usable else (nothing or value_why), runner, hidden)
                state.disagreed |= compared and not ok
                checks["numeric"].record(ok, failed if hidden else f"{case.label}: {why}", part=part)
            checks["numeric"].seconds += time.perf_counter() - numeric_started
        return None

    @staticmethod
    def _record_inputs(check, spec, case, replies, usable, hidden_message) -> None:
        modified = sorted({spec.params[i] for r in replies for i in _list(r.get("modified"))
                           if type(i) is int and 0 <= i < len(spec.params)})
        if not usable:
            check.record(False, hidden_message or f"{case.label}: no usable output (this check pays "
                                                  f"only alongside an output that computes something)")
            return
        check.record(not modified, hidden_message or f"{case.label}: your function changed its input "
                     f"{', '.join(modified)} (work on a copy)")

    # -- the numerical gradient of the student's own forward ----------------------------------------
    def _numeric(self, problem, spec, case, expected, outputs, problems, runner, hidden):
        """(passed, why, compared, part): ``compared`` when the backward's values were compared with
        the numerical gradient (and not refused before: no usable output, a failing forward);
        ``part``, the share of the compared outputs that agree with it when some do not."""
        if problems:
            return False, "; ".join(problems), False, 0.0
        forward = forward_of(spec)
        if forward.name in runner.broken and forward.name != spec.name:
            return False, f"cannot use your {forward.name}: {runner.broken[forward.name]}", False, 0.0
        h = problem.numeric_step
        rng = np.random.default_rng(case.seed + (7,))
        calls, points = [], []                     # points: (output index, index into the array)
        for out_index, name in enumerate(spec.returns):
            param = spec.grads.get(name)
            if param is None:
                continue
            arg_index = forward.params.index(param)
            base = case.forward_args[arg_index]
            if base is None or not isinstance(outputs[out_index], np.ndarray) or np.ndim(expected[out_index]) == 0:
                continue
            g = np.abs(expected[out_index]).ravel()
            # mostly coordinates where the reference's gradient is not tiny, a few where it is 0
            large, zero = np.flatnonzero(g >= 1e-3), np.flatnonzero(g == 0)
            k = min(problem.numeric_points, len(large) + len(zero))
            take = min(len(large), max(k - len(zero), math.ceil(3 * k / 4)))
            chosen = list(rng.choice(large, take, replace=False)) + list(rng.choice(zero, k - take, replace=False))
            for flat in chosen:
                index = np.unravel_index(flat, base.shape)
                for sign in (1, -1):
                    args = list(case.forward_args)
                    args[arg_index] = base.copy()
                    args[arg_index][index] += sign * h
                    calls.append(args)
                points.append((out_index, index, g[flat] >= 1e-3))
        if not calls:
            return True, "", False, 0.0
        timeout = self.assignment.limits.time_per_case * max(1, math.ceil(len(calls) / 8))
        try:
            replies = runner.run(forward.name, calls, timeout=timeout, hidden=hidden)
        except SandboxError as exc:
            return False, exc.message, False, 0.0
        values = []                                # per call, the forward's outputs (float64)
        for reply in replies:
            if not isinstance(reply, dict) or reply.get("status") != "ok":
                status = reply.get("status") if isinstance(reply, dict) else None
                if status == "not_implemented":
                    return False, f"needs your {forward.name}, which is not implemented", False, 0.0
                if status == "missing":
                    return False, f"needs your {forward.name}, which is not defined", False, 0.0
                return False, f"your {forward.name} failed: {_error_text(reply, hidden)}", False, 0.0
            out, whole = unwrap(reply.get("value"), forward.returns)
            used = out if spec.kind == "backward" else out[:1]     # a loss: the loss itself
            usable = not whole and all(isinstance(v, (np.ndarray, float)) for v in used) and (
                spec.kind != "loss" or np.ndim(out[0]) == 0)
            if not usable:
                return False, f"your {forward.name} did not return a usable value", False, 0.0
            values.append([np.asarray(v, dtype=np.float64) for v in used])
        # a backward differentiates sum over the forward's outputs of output * its upstream gradient
        upstream = [np.asarray(case.args[spec.params.index(p)], dtype=np.float64) for p in spec.upstream] \
            if spec.kind == "backward" else None
        numeric, analytic, flat_params = {}, {}, set()
        for k, (out_index, index, matters) in enumerate(points):
            plus, minus = values[2 * k], values[2 * k + 1]
            if spec.kind == "backward":
                if any(a.shape != u.shape or b.shape != u.shape for a, b, u in zip(plus, minus, upstream)):
                    return False, f"your {forward.name} returned the wrong shape", False, 0.0
                slope = float(sum(np.sum((a - b) * u) for a, b, u in zip(plus, minus, upstream)) / (2 * h))
                same = all(np.array_equal(a, b) for a, b in zip(plus, minus))
            else:
                slope = float((plus[0] - minus[0]) / (2 * h))
                same = np.array_equal(plus[0], minus[0])
            if matters and same:
                flat_params.add(spec.grads[spec.returns[out_index]])
            numeric.setdefault(out_index, []).append(slope)
            analytic.setdefault(out_index, []).append(float(np.asarray(outputs[out_index], np.float64)[index]))
        if flat_params:
            # a forward that does not vary where the true gradient is not 0 computes nothing there:
            # a backward "agreeing" with it (zeros) earns nothing
            names = ", ".join(sorted(flat_params))
            return False, (f"your {forward.name} does not change when {names} changes, though the right "
                           f"output does: a gradient cannot be checked against it"), False, 0.0
        bad = []
        for out_index in numeric:
            err = rel_error(analytic[out_index], numeric[out_index])
            if not err < problem.numeric_tolerance:
                bad.append(f"{spec.returns[out_index]} does not agree with the numerical gradient of "
                           f"your {forward.name} (relative error {err:.1e})")
        part = (len(numeric) - len(bad)) / len(numeric) if bad and len(numeric) > 1 else 0.0
        return not bad, "; ".join(bad), bool(bad), part


def _stride_hint(spec, message: str) -> str | None:
    """1-D functions take their stride as a tuple (s,), as 2-D ones take (sh, sw): code that reads
    it as a number raises a TypeError about a tuple."""
    if "stride" in spec.params and spec.family.endswith("1d") and "'tuple'" in message:
        return "hint: in 1-D the stride is a tuple of one number, (s,), as it is (sh, sw) in 2-D: read it with (s,) = stride"
    return None


class _FunctionState:
    """What grading one function gathers across its cases."""

    def __init__(self):
        self.diagnoses = Counter()    # mutant -> cases
        self.errors = Counter()       # what the function raised, once per kind
        self.hints = []               # NumPy-version hints
        self.disagreed = False        # a backward's values disagreed with the numerical gradient
        self.skipped = False          # not implemented / not defined


def environment() -> dict:
    """The Python and NumPy a submission runs with (the sandbox runs this interpreter)."""
    return {"python": platform.python_version(), "numpy": np.__version__}


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _cases(count: int) -> str:
    return f"{count} case{'s' if count > 1 else ''}"


def _error_message(reply) -> str:
    error = reply.get("error") if isinstance(reply, dict) else None
    return str(error.get("message")) if isinstance(error, dict) else ""


def _error_text(reply: dict, hidden: bool = False) -> str:
    """A failed call in words: the exception (for a hidden case only its type: its message may
    show the hidden inputs' shapes), or how the call failed."""
    status = reply.get("status") if isinstance(reply, dict) else None
    if status == "error" and isinstance(reply.get("error"), dict):
        error = reply["error"]
        kind = str(error.get("type"))
        if hidden:                     # a class of its own could be named after the inputs
            builtin = isinstance(getattr(builtins, kind, None), type) and \
                issubclass(getattr(builtins, kind), BaseException)
            return f"raised {kind if builtin else 'an exception of its own class'} in a hidden case"
        line = f" ({line_text(error)})" if line_text(error) else ""
        return f"{shorten(error.get('message'), 400)}{line}"
    if status == "not_implemented":
        return "raises NotImplementedError"
    if status == "missing":
        return "not defined"
    return "no usable reply"
