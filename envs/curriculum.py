"""Stage-wise curriculum that advances on the success rate of recent episodes."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable


@runtime_checkable
class CurriculumEnv(Protocol):
    """What an env must provide to be driven by a curriculum (``env.curriculum: true``).

    - ``set_difficulty(**knobs)``: called with the knobs of the current stage of the
      ``curriculum_preset`` (every key of the stage but ``name``), before the first episode and
      at every stage change; the env applies them from its next ``reset``. Raise ``ValueError``
      for a knob it does not know.
    - ``info["success"]`` (a bool) in the ``info`` of an episode's last step: the curriculum
      advances on the success rate of recent episodes. A missing flag counts as a failure.

    The check is on ``env.unwrapped``, so wrappers need not forward the method.
    """

    def set_difficulty(self, **knobs: Any) -> None: ...


class StageEntry(NamedTuple):
    """When a stage was entered: its index, the episode count and the global step then."""

    stage: int
    episode: int
    global_step: int | None


class CurriculumManager:
    """Walks through difficulty stages as the agent starts succeeding.

    After every episode, call :meth:`record_episode`. The manager moves to the next stage once
    the current one has seen at least ``min_episodes`` episodes and the success rate over the
    last ``window`` of them (fewer while the stage is younger than ``window``) reaches
    ``success_threshold``. The window is cleared on every advancement, so each stage is judged
    on its own episodes only. The final stage is never left.

    Args:
        stages: ordered stage mappings, each with a ``name`` and any difficulty knobs of the
            environment (e.g. ``GimbalEnv.set_difficulty`` keywords).
        window: number of most recent episodes the success rate is computed over.
        min_episodes: episodes a stage must last at least before it may be left.
        success_threshold: success rate in (0, 1] needed to advance.
        expected_entry_fracs: where stages 1, 2, ... are usually entered, as increasing
            fractions of a run (measured; one per stage after the first). Only previews use it,
            to draw schedules whose intervals start at a stage.
    """

    def __init__(
        self,
        stages: Sequence[Mapping[str, Any]],
        window: int = 20,
        min_episodes: int = 10,
        success_threshold: float = 0.8,
        expected_entry_fracs: Sequence[float] | None = None,
    ) -> None:
        if isinstance(stages, str | bytes) or not isinstance(stages, Sequence):
            raise ValueError(f"stages must be a list of mappings, got {type(stages).__name__}")
        if len(stages) == 0:
            raise ValueError("stages is empty: a curriculum needs at least one stage")
        self._names: list[str] = []
        self._params: list[dict[str, Any]] = []
        for index, stage in enumerate(stages):
            if not isinstance(stage, Mapping):
                raise ValueError(
                    f"stages[{index}] must be a mapping with a 'name' and knobs, "
                    f"got {type(stage).__name__}"
                )
            name = stage.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError(f"stages[{index}].name is missing or not a non-empty string")
            if name in self._names:
                raise ValueError(f"stages[{index}].name {name!r} is used by an earlier stage")
            self._names.append(name)
            self._params.append({str(k): v for k, v in stage.items() if k != "name"})
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        if isinstance(min_episodes, bool) or not isinstance(min_episodes, int) or min_episodes < 1:
            raise ValueError(f"min_episodes must be an integer >= 1, got {min_episodes!r}")
        if (
            isinstance(success_threshold, bool)
            or not isinstance(success_threshold, int | float)
            or not 0.0 < success_threshold <= 1.0
        ):
            raise ValueError(f"success_threshold must be in (0, 1], got {success_threshold!r}")

        if expected_entry_fracs is not None:
            fracs = list(expected_entry_fracs)
            if (
                len(fracs) != len(stages) - 1
                or any(isinstance(f, bool) or not isinstance(f, int | float) for f in fracs)
                or any(not 0.0 < f < 1.0 for f in fracs)
                or fracs != sorted(set(fracs))
            ):
                raise ValueError(
                    f"expected_entry_fracs must be {len(stages) - 1} increasing fractions in "
                    f"(0, 1), one per stage after the first, got {expected_entry_fracs!r}"
                )
            expected_entry_fracs = tuple(float(f) for f in fracs)
        self.expected_entry_fracs = expected_entry_fracs
        self.window = window
        self.min_episodes = min_episodes
        self.success_threshold = float(success_threshold)
        self._stage = 0
        self._episodes = 0
        self._episodes_in_stage = 0
        self._recent: deque[bool] = deque(maxlen=window)
        self._history: list[StageEntry] = [StageEntry(0, 0, 0)]

    @property
    def stage(self) -> int:
        """Index of the current stage."""
        return self._stage

    @property
    def stage_name(self) -> str:
        """Name of the current stage."""
        return self._names[self._stage]

    @property
    def num_stages(self) -> int:
        """Number of stages."""
        return len(self._names)

    @property
    def is_final(self) -> bool:
        """Whether the current stage is the last one."""
        return self._stage == len(self._names) - 1

    @property
    def params(self) -> dict[str, Any]:
        """Difficulty knobs of the current stage (a copy, without ``name``)."""
        return dict(self._params[self._stage])

    @property
    def success_rate(self) -> float:
        """Success rate over the window of the current stage; 0.0 before any episode."""
        return sum(self._recent) / len(self._recent) if self._recent else 0.0

    @property
    def episodes(self) -> int:
        """Episodes recorded in total."""
        return self._episodes

    @property
    def episodes_in_stage(self) -> int:
        """Episodes recorded since the current stage was entered."""
        return self._episodes_in_stage

    @property
    def stage_history(self) -> list[StageEntry]:
        """Stages entered so far, in order, starting with stage 0 at episode 0 and step 0."""
        return list(self._history)

    def record_episode(self, success: bool, global_step: int | None = None) -> bool:
        """Record one finished episode; return True when it moved the curriculum forward.

        ``global_step`` is stored in :attr:`stage_history` as the step the new stage was
        entered at.
        """
        self._episodes += 1
        self._episodes_in_stage += 1
        self._recent.append(bool(success))
        if (
            self.is_final
            or self._episodes_in_stage < self.min_episodes
            or self.success_rate < self.success_threshold
        ):
            return False
        self._stage += 1
        self._episodes_in_stage = 0
        self._recent.clear()
        step = None if global_step is None else int(global_step)
        self._history.append(StageEntry(self._stage, self._episodes, step))
        return True

    def state_dict(self) -> dict[str, Any]:
        """Progress as plain Python data (safe for ``torch.save(..., weights_only=True)``)."""
        return {
            "stage": self._stage,
            "stage_names": list(self._names),
            "episodes": self._episodes,
            "episodes_in_stage": self._episodes_in_stage,
            "recent": list(self._recent),
            "stage_history": [list(entry) for entry in self._history],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore progress saved by :meth:`state_dict` for the same list of stages.

        Raises:
            ValueError: if the saved curriculum has different stages or the data is malformed.
        """
        names = list(state.get("stage_names", []))
        if names != self._names:
            raise ValueError(
                f"curriculum state was saved with {len(names)} stages {names}, but this "
                f"curriculum has {len(self._names)} stages {self._names}; resume with the same "
                "curriculum preset"
            )
        stage = int(state["stage"])
        if not 0 <= stage < len(self._names):
            raise ValueError(f"saved stage {stage} is outside 0..{len(self._names) - 1}")
        self._stage = stage
        self._episodes = int(state["episodes"])
        self._episodes_in_stage = int(state["episodes_in_stage"])
        # Only the newest `window` results matter if the window was shortened since saving.
        self._recent = deque((bool(s) for s in state["recent"]), maxlen=self.window)
        self._history = [
            StageEntry(int(s), int(e), None if g is None else int(g))
            for s, e, g in state["stage_history"]
        ]
