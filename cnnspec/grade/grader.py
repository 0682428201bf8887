"""Grading one submission: cases in, the sandbox's outputs judged against the reference.

    grader = Grader(load_assignment("hw/assignment.toml"))
    result = grader.grade(Path("alice/layers.py"))          # a GradeResult
    print(reports.text(result))

Everything that decides a score happens here, in the trusted process: the cases (from the public
seed, or the hidden seed derived from the assignment's secret), the reference's outputs, the
comparisons, the mutant diagnosis and the points. The sandbox only ever receives inputs.
"""
from __future__ import annotations

import copy
import importlib
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np

from cnnspec.grade import mutants
from cnnspec.grade.assignment import CHECK_TITLES, Assignment, FunctionProblem
from cnnspec.grade.cases import Case, cast, make_cases
from cnnspec.grade.checks import as_outputs, output_problem, rel_error, unwrap, value_problem
from cnnspec.grade.functions import FUNCTIONS, forward_of
from cnnspec.grade.network import grade_network
from cnnspec.grade.results import CheckResult, GradeResult, ProblemResult
from cnnspec.grade.sandbox import Sandbox, SandboxError

MAX_STARTS = 25               # sandbox (re)starts per submission before the rest is not graded


class Runner:
    """A submission's sandbox for the length of one grading: started on demand, restarted after
    a crash or a timeout, given up when it cannot even import the file."""

    def __init__(self, sandbox: Sandbox):
        self.box = sandbox
        self.fatal = None             # why nothing more can run
        self.violations = []
        self.import_error = None
        self.import_output = None     # bytes printed before any case ran
        self.defined = None
        self.broken = {}              # function -> why it cannot be called (a timeout, a crash)
        self.wrong = set()            # functions whose outputs did not match the reference

    def ensure(self) -> None:
        if self.fatal:
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
            line = f" at line {error['line']}" if isinstance(error.get("line"), int) else ""
            rest = ("Python reads the whole file before running it, so no function could be graded"
                    if error.get("type") in ("SyntaxError", "IndentationError", "TabError")
                    else "the functions defined before that point were graded")
            self.import_error = f"importing your file stopped{line}: {str(error.get('message'))[:500]}; {rest}"
        defined = ready.get("defined")
        self.defined = [d for d in defined if isinstance(d, str)] if isinstance(defined, list) else []
        if self.import_output is None:     # what the first import printed: no case has run yet
            self.import_output = self.box.output_size()

    def run(self, func: str, calls: list, timeout: float) -> list:
        self.ensure()
        reply = self.box.call(func, calls, timeout)
        self._note(reply.get("violations"))
        return reply["replies"]

    def _note(self, violations) -> None:
        for v in violations if isinstance(violations, list) else ():
            if isinstance(v, str) and v not in self.violations and len(self.violations) < 20:
                self.violations.append(v[:300])


class Grader:
    """Grades submissions of one assignment (cases and reference outputs are computed once)."""

    def __init__(self, assignment: Assignment, *, reference=None, public_only: bool = False):
        self.assignment = assignment
        self.reference = reference if reference is not None else importlib.import_module("cnnspec.api")
        self.public_only = public_only
        self.hidden_seed = None if public_only else assignment.hidden_seed()
        self._cases = {}

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
        """Grade the file ``submission``. ``trusted`` runs it without the guard and the user
        switch: only for the project's own reference (self-tests)."""
        started = time.monotonic()
        submission = Path(submission)
        a = self.assignment
        result = GradeResult(a.name, display_name or submission.name, self.public_only)
        box = Sandbox(submission, limits=a.limits, forbidden=a.forbidden,
                      display_name=a.submission if display_name is None else Path(display_name).name,
                      trusted=trusted)
        runner = Runner(box)
        deadline = started + a.limits.total_time
        try:
            for problem in a.functions:
                if time.monotonic() > deadline:
                    result.problems.append(self._not_graded(problem.name, "function", problem.points,
                                                            f"not graded: the total time limit "
                                                            f"({a.limits.total_time:g} s) was exceeded"))
                    continue
                result.problems.append(self.grade_function(problem, runner))
            for problem in a.networks:
                if time.monotonic() > deadline:
                    result.problems.append(self._not_graded(problem.name, "network", problem.points,
                                                            "not graded: the total time limit was exceeded"))
                    continue
                result.problems.append(grade_network(self, problem, runner))
        finally:
            box.close()
        # printed output can carry hidden inputs: a grade with hidden cases shows only what the
        # import printed (a public-only grade shows everything)
        result.output = box.output(None if self.public_only else (runner.import_output or 0))
        result.violations = runner.violations
        result.import_error = runner.import_error
        result.sandbox_starts = box.starts
        result.seconds = round(time.monotonic() - started, 3)
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
        return {k: CheckResult(k, titles[k], round(problem.points * w / total, 4))
                for k, w in weights.items() if w > 0}

    def grade_function(self, problem: FunctionProblem, runner: Runner) -> ProblemResult:
        started = time.monotonic()
        spec = FUNCTIONS[problem.name]
        result = ProblemResult(problem.name, "function", problem.points)
        checks = self.check_results(problem)
        diagnoses = Counter()
        errors = Counter()            # what the function raised, once per kind
        stop = None                   # why the remaining cases are not run
        limits = self.assignment.limits
        for case, expected in self.cases(problem):
            applicable = [k for k in checks if self._applies(k, case, spec)]
            if stop is None:
                try:
                    replies = [runner.run(spec.name, [list(args)], timeout=limits.time_per_case)[0]
                               for args in (case.args, cast(case.args, np.float32))]
                except SandboxError as exc:
                    if exc.kind == "fatal":
                        stop = f"not graded: {exc.message}"
                        result.notes.append(stop)
                    else:
                        stop = f"{exc.message}, {case.label}"
                        result.notes.append(stop + "; the remaining cases of this function were not run")
                    runner.broken[spec.name] = stop
                else:
                    stop = self._judge_case(problem, spec, case, expected, replies, checks, applicable,
                                            diagnoses, errors, runner)
                    if stop:
                        result.notes.append(stop)
                    continue
            for key in applicable:
                checks[key].record(False)
        for text, count in errors.most_common():
            result.notes.append(f"{text} [{_cases(count)}]")
        for mutant, count in diagnoses.most_common():
            result.notes.insert(0, f"{mutant.message} [{_cases(count)}]")
        result.checks = list(checks.values())
        if any(not c.ok for c in result.checks if c.key in ("reference", "edge")):
            runner.wrong.add(spec.name)
        if (spec.forward in runner.wrong and spec.forward not in runner.broken and "numeric" in checks
                and checks["numeric"].messages):
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

    def _judge_case(self, problem, spec, case, expected, replies, checks, applicable, diagnoses,
                    errors, runner) -> str | None:
        """Record this case in each applicable check; return a reason to stop grading the
        function (not defined, not implemented), else None."""
        r64, r32 = (r if isinstance(r, dict) else {} for r in replies)
        status = r64.get("status")
        if status in ("missing", "not_implemented"):
            for key in applicable:
                checks[key].record(False)
            return (f"{spec.name} is not defined in your file" if status == "missing" else
                    f"{spec.name} is not implemented (it raises NotImplementedError)")
        if status != "ok":
            errors[_error_text(r64, case, label=False)] += 1
            for key in applicable:        # the inputs check judges the cases that returned:
                if key != "inputs":       # a crash costs the values, not that check as well
                    checks[key].record(False)
            return None

        outputs, whole = unwrap(r64.get("value"), spec.returns)
        problems64 = [whole] if whole else [
            output_problem(n, g, e, np.float64) for n, g, e in zip(spec.returns, outputs, expected)]
        problems64 = [p for p in problems64 if p]
        if "shape_dtype" in checks:
            problems = list(problems64)
            if r32.get("status") == "ok":
                outputs32, whole32 = unwrap(r32.get("value"), spec.returns)
                problems += [whole32] if whole32 else [
                    output_problem(n, g, e, np.float32) for n, g, e in zip(spec.returns, outputs32, expected)]
                problems = [p for p in problems if p]
                problems = list(dict.fromkeys(problems))
            else:
                problems.append("with float32 inputs: " + _error_text(r32, case, label=False))
            checks["shape_dtype"].record(not problems, f"{case.label}: {'; '.join(problems)}")

        value_key = "edge" if case.is_edge else "reference"
        matched = False
        if value_key in checks:
            tol = problem.forward_tolerance if spec.kind == "forward" else problem.backward_tolerance
            why = problems64 or [p for p in (value_problem(n, g, e, tol, case.visibility == "public")
                                             for n, g, e in zip(spec.returns, outputs, expected)) if p]
            if why and not whole:
                mutant = mutants.diagnose(spec.name, self.reference, copy.deepcopy(case.args), outputs,
                                          expected, tol=max(1e-6, 10 * tol))
                if mutant is not None:
                    diagnoses[mutant] += 1
                    why = [f"matches the mistake '{mutant.name.replace('_', ' ')}' (see above)"]
            checks[value_key].record(not why, f"{case.label}: {'; '.join(why)}")
            matched = not why

        if "inputs" in checks:
            self._record_inputs(checks["inputs"], spec, case, (r64, r32))
        if "numeric" in checks and "numeric" in applicable:
            # A backward equal to the reference's is the gradient of the right forward: it earns
            # this check even when the student's own forward is wrong (no penalty twice).
            if matched:
                checks["numeric"].record(True)
            else:
                ok, why = self._numeric(problem, spec, case, expected, outputs, problems64, runner)
                checks["numeric"].record(ok, f"{case.label}: {why}")
        return None

    @staticmethod
    def _record_inputs(check, spec, case, replies) -> None:
        modified = sorted({spec.params[i] for r in replies for i in _list(r.get("modified"))
                           if type(i) is int and 0 <= i < len(spec.params)})
        check.record(not modified, f"{case.label}: your function changed its input "
                     f"{', '.join(modified)} (work on a copy)")

    # -- the numerical gradient of the student's own forward ----------------------------------------
    def _numeric(self, problem, spec, case, expected, outputs, problems, runner):
        if problems:
            return False, "; ".join(problems)
        forward = forward_of(spec)
        if forward.name in runner.broken and forward.name != spec.name:
            return False, f"cannot use your {forward.name}: {runner.broken[forward.name]}"
        h = problem.numeric_step
        rng = np.random.default_rng(case.seed + (7,))
        calls, points = [], []                     # points: (output index, index into the array)
        for out_index, name in enumerate(spec.returns):
            param = spec.grads.get(name)
            if param is None:
                continue
            arg_index = forward.params.index(param)
            base = case.forward_args[arg_index]
            if base is None:
                continue
            g = np.abs(expected[out_index]).ravel()
            candidates = np.flatnonzero((g >= 1e-3) | (g == 0))
            chosen = rng.choice(candidates, min(problem.numeric_points, len(candidates)), replace=False)
            for flat in chosen:
                index = np.unravel_index(flat, base.shape)
                for sign in (1, -1):
                    args = list(case.forward_args)
                    args[arg_index] = base.copy()
                    args[arg_index][index] += sign * h
                    calls.append(args)
                points.append((out_index, index))
        if not calls:
            return True, ""
        timeout = self.assignment.limits.time_per_case * max(1, math.ceil(len(calls) / 8))
        try:
            replies = runner.run(forward.name, calls, timeout=timeout)
        except SandboxError as exc:
            return False, exc.message
        values = []
        for reply in replies:
            if not isinstance(reply, dict) or reply.get("status") != "ok":
                status = reply.get("status") if isinstance(reply, dict) else None
                if status == "not_implemented":
                    return False, f"needs your {forward.name}, which is not implemented"
                if status == "missing":
                    return False, f"needs your {forward.name}, which is not defined"
                return False, f"your {forward.name} failed: {_error_text(reply, case, label=False)}"
            out, whole = unwrap(reply.get("value"), forward.returns)
            value = out[0]
            usable = isinstance(value, (np.ndarray, float)) and (spec.kind != "loss" or np.ndim(value) == 0)
            if whole or not usable:
                return False, f"your {forward.name} did not return a usable value"
            values.append(np.asarray(value, dtype=np.float64))
        numeric, analytic = {}, {}
        for k, (out_index, index) in enumerate(points):
            plus, minus = values[2 * k], values[2 * k + 1]
            if spec.kind == "backward":
                dout = case.args[0]
                if plus.shape != dout.shape or minus.shape != dout.shape:
                    return False, f"your {forward.name} returned the wrong shape"
                slope = float(np.sum((plus - minus) * dout) / (2 * h))
            else:
                slope = float((plus - minus) / (2 * h))
            numeric.setdefault(out_index, []).append(slope)
            analytic.setdefault(out_index, []).append(float(np.asarray(outputs[out_index], np.float64)[index]))
        bad = []
        for out_index in numeric:
            err = rel_error(analytic[out_index], numeric[out_index])
            if not err < problem.numeric_tolerance:
                bad.append(f"{spec.returns[out_index]} does not agree with the numerical gradient of "
                           f"your {forward.name} (relative error {err:.1e})")
        return not bad, "; ".join(bad)


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _cases(count: int) -> str:
    return f"{count} case{'s' if count > 1 else ''}"


def _error_text(reply: dict, case: Case, label: bool = True) -> str:
    """A failed call in words: the exception, or how the call failed."""
    prefix = f"{case.label}: " if label else ""
    status = reply.get("status") if isinstance(reply, dict) else None
    if status == "error" and isinstance(reply.get("error"), dict):
        error = reply["error"]
        line = f" (line {error['line']})" if isinstance(error.get("line"), int) else ""
        return f"{prefix}{str(error.get('message'))[:300]}{line}"
    if status == "not_implemented":
        return f"{prefix}raises NotImplementedError"
    if status == "missing":
        return f"{prefix}not defined"
    return f"{prefix}no usable reply"
