"""What grading found, as data: the reports (text, JSON/Gradescope, JUnit, CSV) render these."""
from __future__ import annotations

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

    @property
    def score(self) -> float:
        """Unrounded: reports round; the problem's score rounds the sum."""
        return self.max_score * self.passed / self.total if self.total else 0.0

    @property
    def ok(self) -> bool:
        return self.total > 0 and self.passed == self.total

    def record(self, passed: bool, message: str | None = None, keep: int = 4) -> None:
        self.total += 1
        if passed:
            self.passed += 1
        elif message:
            if len(self.messages) < keep:
                self.messages.append(message)
            else:
                self.dropped += 1


@dataclass
class ProblemResult:
    name: str
    kind: str                # "function" | "network"
    max_score: float
    checks: list = field(default_factory=list)
    notes: list = field(default_factory=list)       # diagnoses and errors, shown first
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return round(sum(c.score for c in self.checks), 2)


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

    @property
    def score(self) -> float:
        return round(sum(p.score for p in self.problems), 2)

    @property
    def max_score(self) -> float:
        return round(sum(p.max_score for p in self.problems), 2)

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
            for c, cd in zip(p.checks, pd["checks"]):
                cd["score"] = round(c.score, 4)
        return data
