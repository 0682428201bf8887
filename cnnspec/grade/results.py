"""What grading found, as data: the reports (text, JSON/Gradescope, JUnit, CSV) render these."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class CheckResult:
    """One check of one problem ("matches the reference"), over the cases it applies to."""

    key: str                 # shape_dtype | reference | numeric | edge | inputs | outputs | ...
    title: str
    max_score: float
    passed: int = 0
    total: int = 0
    messages: list = field(default_factory=list)    # why cases failed, student-facing
    dropped: int = 0                                # further failure messages not kept
    seconds: float = 0.0                            # time spent on this check (calls, judging)
    skipped: str | None = None                      # why it did not run (not implemented, ...)
    credit: float | None = None                     # partial credit in [0, 1] instead of passed/total
    partial: float = 0.0                            # credit of failed cases, in cases (some outputs right)

    @property
    def fraction(self) -> float:
        if self.credit is not None:
            return self.credit
        return (self.passed + self.partial) / self.total if self.total else 0.0

    @property
    def score(self) -> float:
        """Exact; what is shown and added up is ProblemResult.cents()."""
        return self.max_score * self.fraction

    @property
    def ok(self) -> bool:
        if self.credit is not None:
            return self.credit >= 1.0
        return self.total > 0 and self.passed == self.total

    def record(self, passed: bool, message: str | None = None, keep: int = 4, part: float = 0.0) -> None:
        """One case: passed, or failed with ``message`` and ``part`` of its credit (the share of
        its outputs that are right)."""
        self.total += 1
        if passed:
            self.passed += 1
            return
        self.partial += part
        if message:
            if len(self.messages) < keep:
                self.messages.append(message)
            else:
                self.dropped += 1


@dataclass
class ProblemResult:
    name: str
    kind: str                # "function" | "network" | "design"
    max_score: float
    checks: list = field(default_factory=list)
    notes: list = field(default_factory=list)       # diagnoses and errors, shown first
    seconds: float = 0.0
    details: dict = field(default_factory=dict)     # figures for the JSON report (a design's training)

    def cents(self) -> list[tuple[int, int]]:
        """Each check's (score, max_score) in whole hundredths of a point, the accounting every
        report shows: the maxima share the problem's points (in hundredths) by largest remainders,
        so they add up to them; a passed check scores its maximum; any other check its exact score
        rounded down, below its maximum. Scores never exceed their maximum, "passed" means full
        marks, and the parts add up to the problem's score."""
        exact = [c.max_score for c in self.checks]
        target = round(self.max_score * 100)
        total = sum(exact)
        shares = [target * e / total if total > 0 else 0.0 for e in exact]
        maxima = [math.floor(s + 1e-9) for s in shares]
        spare = target - sum(maxima) if total > 0 else 0
        for k in sorted(range(len(shares)), key=lambda k: (maxima[k] - shares[k], k))[:max(0, spare)]:
            maxima[k] += 1
        out = []
        for c, top in zip(self.checks, maxima):
            if c.ok:
                out.append((top, top))
            else:
                out.append((min(math.floor(top * c.fraction + 1e-9), max(top - 1, 0)), top))
        return out

    @property
    def score(self) -> float:
        return sum(s for s, _ in self.cents()) / 100

    @property
    def max_cents(self) -> int:
        return sum(m for _, m in self.cents()) if self.checks else round(self.max_score * 100)


@dataclass
class GradeResult:
    assignment: str
    submission: str
    public_only: bool
    problems: list = field(default_factory=list)
    seconds: float = 0.0
    output: str = ""              # what the submission printed (truncated)
    violations: list = field(default_factory=list)  # refused actions ("forbidden import: cnnspec")
    import_error: str | None = None
    sandbox_starts: int = 0
    environment: dict = field(default_factory=dict)   # {"python": "3.11.7", "numpy": "2.1.3"}
    missing: str | None = None    # no file to grade: which was expected, which were found
    notices: list = field(default_factory=list)   # how the submission was read (a notebook's cells)
    unreadable: bool = False      # the file could not be read or compiled (a syntax error): nothing ran

    @property
    def score(self) -> float:
        return sum(s for p in self.problems for s, _ in p.cents()) / 100

    @property
    def max_score(self) -> float:
        return sum(p.max_cents for p in self.problems) / 100

    def problem(self, name: str) -> ProblemResult:
        for p in self.problems:
            if p.name == name:
                return p
        raise KeyError(name)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["score"], data["max_score"] = self.score, self.max_score
        for p, pd in zip(self.problems, data["problems"]):
            pd["score"] = p.score
            for (score, top), cd in zip(p.cents(), pd["checks"]):
                cd["score"], cd["max_score"] = score / 100, top / 100
        return data
