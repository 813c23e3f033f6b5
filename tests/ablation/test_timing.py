"""mlpot.ablation.timing: interleaved timing (on a fake clock, so the medians are exact) and the
training-step and inference callables it times."""

from __future__ import annotations

import ase.io
import pytest
import torch

from mlpot.ablation.timing import inference_step, interleaved_times, interleaved_timing, training_step

pytestmark = pytest.mark.usefixtures("one_thread")


class FakeClock:
    """A clock that only the tasks advance: each call of task k advances it by the next of
    ``durations[k]`` (seconds; multiples of 1/4, exact in binary), and the order of calls is kept."""

    def __init__(self, durations: dict[str, list[float]]):
        self.now, self.durations, self.calls = 0.0, durations, []

    def __call__(self) -> float:
        return self.now

    def task(self, key: str):
        def run() -> None:
            self.now += self.durations[key][sum(k == key for k in self.calls)]
            self.calls.append(key)

        return run


DURATIONS = {"a": [9.0, 1.0, 3.0, 2.0], "b": [9.0, 0.25, 0.5, 4.0], "c": [9.0, 7.0, 7.0, 7.0],
             "d": [9.0, 2.5, 1.5, 0.75], "e": [9.0, 1.0, 1.0, 8.0]}


def timed(seed: int, warmup: int = 1, rounds: int = 3) -> tuple[dict, FakeClock]:
    clock = FakeClock(DURATIONS)
    times = interleaved_times({k: clock.task(k) for k in DURATIONS}, rounds, seed=seed, warmup=warmup, clock=clock)
    return times, clock


def test_every_task_once_per_round_in_a_shuffled_order():
    times, clock = timed(seed=0)
    keys = sorted(DURATIONS)
    rounds = [clock.calls[i:i + len(keys)] for i in range(0, len(clock.calls), len(keys))]
    assert len(rounds) == 4  # 1 warm-up + 3 timed
    assert all(sorted(r) == keys for r in rounds)  # each task exactly once per round
    assert len({tuple(r) for r in rounds}) > 1  # the order changes from round to round
    assert timed(seed=0)[1].calls == clock.calls  # seeded: the same orders again
    assert any(timed(seed=s)[1].calls != clock.calls for s in (1, 2, 3))


def test_times_and_medians_are_the_timed_rounds_only():
    times, _ = timed(seed=5)
    # The warm-up call (9 s each) is not timed; the rest, in round order.
    assert times == {k: v[1:] for k, v in DURATIONS.items()}
    clock = FakeClock(DURATIONS)
    medians = interleaved_timing({k: clock.task(k) for k in DURATIONS}, 3, seed=5, warmup=1, clock=clock)
    assert medians == {"a": 2.0, "b": 0.5, "c": 7.0, "d": 1.5, "e": 1.0}
    # Without warm-up the first call counts: a's median over 9, 1, 3 is 3.
    clock = FakeClock(DURATIONS)
    assert interleaved_timing({"a": clock.task("a")}, 3, warmup=0, clock=clock) == {"a": 3.0}
    with pytest.raises(ValueError, match="rounds"):
        interleaved_times({"a": clock.task("a")}, 0)


def test_training_step_trains_and_inference_leaves_eval_mode(emt_structures, monkeypatch):
    import mlpot.training.loop as loop
    from mlpot.data import collate
    from mlpot.descriptors import SymmetryFunctionSpec
    from mlpot.models import NetworkConfig, Potential
    from mlpot.training import TrainConfig

    torch.manual_seed(0)
    model = Potential(SymmetryFunctionSpec.default(["Cu", "Au"], cutoff=4.0), NetworkConfig(depth=2, width=8)).double()
    model.fit_to_data([collate(emt_structures, cutoff=4.0)])
    config = TrainConfig.from_dict({"data": {"train": "unused.extxyz"}, "optimizer": {"lr": 1e-2},
                                    "training": {"batch_size": 2, "dtype": "float64", "ema_decay": 0.9}})
    step = training_step(model, emt_structures, config, torch.device("cpu"))
    before = [p.detach().clone() for p in model.parameters()]
    steps, inner = [], loop._step
    monkeypatch.setattr(loop, "_step", lambda learner, cached, *a: steps.append(len(cached[0].n_atoms))
                        or inner(learner, cached, *a))
    step()
    assert steps == [4]  # one optimiser step over the whole batch, though batch_size is 2
    assert model.training and any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    infer = inference_step(model, emt_structures)
    infer()
    assert not model.training
    step()  # the same callables, again and in any order
    assert model.training


@pytest.fixture(scope="module")
def emt_structures(tmp_path_factory):
    """Four labelled Cu/Au crystals of 4 atoms."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    out = []
    for seed in range(4):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
        atoms.numbers[seed % 4] = 79
        atoms.rattle(0.05, seed=seed)
        atoms.calc = EMT()
        atoms.get_forces()
        out.append(atoms)
    path = tmp_path_factory.mktemp("timing") / "emt.extxyz"
    ase.io.write(path, out)
    return ase.io.read(path, ":")
