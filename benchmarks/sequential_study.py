"""Validity and savings of the sequential α comparison (issue 25), by simulation.

For the design level 0.05, power 0.8 at a gap of 0.3 (worst case over the base rate) with the
smallest budget that reaches it, 10 000 Bernoulli sequences per case:

- false-positive rate under H0 (p_a = p_b = p) for p in {0.05, 0.2, 0.5, 0.8, 0.95};
- power and episodes used per gap (base rate centred, p_a = 0.5 - gap/2, the hardest case),
  against the fixed-N design of Barnard's exact test with the same level and power at the same
  gap (:func:`retain_ros.evaluation.fixed_design.fixed_n`): the saving in %;
- family-wise false-positive rate of the real :class:`AdaptiveSchedule` with 3 settings (Holm),
  reference and 'best' mode.

    .venv/bin/python benchmarks/sequential_study.py [--sequences 10000] [--results]

``--results`` writes the ``## Sequential comparison`` section of benchmarks/RESULTS.md and the
plot benchmarks/sequential_study.png.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tqdm import tqdm  # noqa: E402

from benchmarks.results import write_section  # noqa: E402
from retain_ros.evaluation.adaptive_schedule import AdaptiveSchedule  # noqa: E402
from retain_ros.evaluation.fixed_design import fixed_n  # noqa: E402
from retain_ros.evaluation.fixed_design import worst_case_power  # noqa: E402
from retain_ros.evaluation.sequential import BudgetError  # noqa: E402
from retain_ros.evaluation.sequential import plan  # noqa: E402
from retain_ros.evaluation.sequential import SequentialDesign  # noqa: E402
from retain_ros.evaluation.sequential import simulate  # noqa: E402

SECTION = '## Sequential comparison'
NULL_RATES = (0.05, 0.2, 0.5, 0.8, 0.95)
GAPS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
LEVEL, POWER, GAP = 0.05, 0.8, 0.3


def smallest_budget(comparisons: int = 1, **kwargs) -> int:
    """Return the smallest budget whose design reaches the power (BudgetError's answer)."""
    try:
        plan(SequentialDesign(budget=2, **kwargs), comparisons)
        return 2
    except BudgetError as exc:
        return int(exc.needed)


def family_rate(design: SequentialDesign, sequences: int, seed: int) -> float:
    """Return the family-wise false-positive rate of the real schedule, 3 equal settings."""
    rng = random.Random(seed)
    false = 0
    for index in tqdm(range(sequences), desc=f'3 settings, {design.reference}', leave=False):
        sched = AdaptiveSchedule(['0', '0.5', '1'], design, seed=index)
        rate = rng.choice(NULL_RATES)
        for _ in sched:
            sched.record(rng.random() < rate)
        false += any(c['decision'] in ('a better', 'b better')
                     for c in sched.status()['comparisons'])
    return false / sequences


def run(sequences: int) -> dict:
    """Run every case; return the numbers."""
    budget = smallest_budget(level=LEVEL, power=POWER, gap=GAP)
    design = SequentialDesign(level=LEVEL, power=POWER, gap=GAP, budget=budget)
    chosen = plan(design)
    n_fixed = fixed_n(LEVEL, POWER, GAP)
    null = {p: simulate(design, p, p, sequences, seed=int(1000 * p))
            for p in tqdm(NULL_RATES, desc='null')}
    gaps = {}
    for gap in tqdm(GAPS, desc='gaps'):
        base = 0.5 - gap / 2
        gaps[gap] = simulate(design, base, base + gap, sequences, seed=int(100 * gap) + 7)
        gaps[gap]['fixed_power'] = (worst_case_power(n_fixed, LEVEL, gap)['power']
                                    if gap else 0.0)
    worst = simulate(design, chosen.worst_base, chosen.worst_base + GAP, sequences, seed=99)
    family = {}
    for reference, comparisons in (('alpha=1', 2), ('best', 3)):
        d3 = SequentialDesign(level=LEVEL, power=POWER, gap=GAP, reference=reference,
                              budget=smallest_budget(comparisons, level=LEVEL, power=POWER,
                                                     gap=GAP))
        family[reference] = (d3.budget, family_rate(d3, max(1000, sequences // 5), 5))
    return {'design': design, 'plan': chosen, 'n_fixed': n_fixed, 'null': null, 'gaps': gaps,
            'worst': worst, 'family': family, 'sequences': sequences}


def markdown(res: dict, seconds: float) -> str:
    """Return the RESULTS.md section."""
    design, chosen, n_fixed = res['design'], res['plan'], res['n_fixed']
    fixed_eps = 2 * n_fixed
    lines = [SECTION, '',
             f'`benchmarks/sequential_study.py --sequences {res["sequences"]}` '
             f'({time.strftime("%Y-%m-%d")}, {seconds:.0f} s on CPU). Design: level '
             f'{design.level:g} (two-sided), power {design.power:g} at a gap of {design.gap:g} '
             'in the worst case over the base rate; the smallest budget reaching it is '
             f'**{design.budget} episodes per setting** (θ = {chosen.theta:g}, exact power '
             f'{chosen.power:.3f}). Fixed-N baseline: Barnard\'s exact unconditional test, '
             f'smallest N with the same level and power at the same gap: **{n_fixed} per '
             f'setting** ({fixed_eps} episodes for two settings). {res["sequences"]} simulated '
             'sequences per row; Monte-Carlo sd of a rate r is sqrt(r(1−r)/n) '
             f'(≤ {100 * (0.05 * 0.95 / res["sequences"]) ** 0.5:.2f} points at 5%).', '',
             '| H0: p_a = p_b = | false-positive rate | mean episodes | p90 |',
             '|---:|---:|---:|---:|']
    for p, r in res['null'].items():
        lines.append(f'| {p:g} | {100 * r["false_positive_rate"]:.2f}% | '
                     f'{r["mean_episodes"]:.1f} | {r["p90_episodes"]:.0f} |')
    lines += ['', f'Two settings, p_a = 0.5 − gap/2 (the hardest base rate); fixed design: '
              f'{fixed_eps} episodes always.', '',
              '| gap | power (sequential) | power (Barnard, N = '
              f'{n_fixed}, worst case) | mean episodes | p50 | p90 | saving vs fixed |',
              '|---:|---:|---:|---:|---:|---:|---:|']
    for gap, r in res['gaps'].items():
        power = f'{100 * r["power"]:.1f}%' if gap else '– (H0)'
        fixed = f'{100 * r["fixed_power"]:.1f}%' if gap else '–'
        saving = 100 * (1 - r['mean_episodes'] / fixed_eps)
        lines.append(f'| {gap:g} | {power} | {fixed} | {r["mean_episodes"]:.1f} | '
                     f'{r["p50_episodes"]:.0f} | {r["p90_episodes"]:.0f} | {saving:+.0f}% |')
    worst = res['worst']
    lines += ['', f'At the design gap and its worst-case base rate (p_a = '
              f'{chosen.worst_base:g}): power {100 * worst["power"]:.1f}% (exact '
              f'{100 * chosen.power:.1f}%), mean {worst["mean_episodes"]:.1f} episodes vs '
              f'{fixed_eps} fixed ({100 * (1 - worst["mean_episodes"] / fixed_eps):+.0f}%).', '',
              'Family-wise false-positive rate of the real `AdaptiveSchedule`, 3 settings with '
              'equal success rates (Holm):', '']
    for reference, (budget, rate) in res['family'].items():
        lines.append(f'- reference `{reference}` (budget {budget}): {100 * rate:.2f}%')
    null_mean = max(r['mean_episodes'] for r in res['null'].values())
    lines += ['', f'Reading: the budget ({design.budget}) is about the fixed N ({n_fixed}) and '
              'the power matches Barnard\'s at every gap, while the test stops as soon as the '
              'data decide (large gaps) or can no longer decide (curtailment: under H0 at most '
              f'{null_mean:.1f} mean episodes instead of {fixed_eps}). The family-wise rates are '
              'below the level because the worst case of the exact calibration (p = 1/2 in '
              'every block, all comparisons on the edge) is rarely met.', '',
              '![sequential study](sequential_study.png)', '']
    return '\n'.join(lines)


def plot(res: dict, path: str) -> None:
    """Draw power and mean episodes per gap, sequential vs fixed."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    gaps = list(res['gaps'])
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    left.plot(gaps, [res['gaps'][g]['power'] for g in gaps], 'o-', label='sequential')
    left.plot(gaps, [res['gaps'][g]['fixed_power'] for g in gaps], 's--',
              label=f'Barnard N={res["n_fixed"]}')
    left.axhline(res['design'].power, color='grey', lw=0.8)
    left.set_xlabel('gap p_b − p_a')
    left.set_ylabel('power')
    left.legend(fontsize=8)
    right.plot(gaps, [res['gaps'][g]['mean_episodes'] for g in gaps], 'o-', label='sequential')
    right.axhline(2 * res['n_fixed'], color='C1', ls='--', label='fixed N (2 settings)')
    right.set_xlabel('gap p_b − p_a')
    right.set_ylabel('mean episodes')
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> int:
    """Run the study and print (or write) the results."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sequences', type=int, default=10000)
    parser.add_argument('--results', action='store_true',
                        help='write benchmarks/RESULTS.md and benchmarks/sequential_study.png')
    args = parser.parse_args()
    start = time.time()
    res = run(args.sequences)
    text = markdown(res, time.time() - start)
    print(text)
    if args.results:
        write_section(text, SECTION)
        plot(res, os.path.join(ROOT, 'benchmarks', 'sequential_study.png'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
