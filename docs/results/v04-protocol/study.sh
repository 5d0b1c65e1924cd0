#!/usr/bin/env bash
# The study behind docs/RESULTS.md (version 0.4's protocol, docs/evaluation.md):
# every strategy, the baselines and the bounds x six scenarios x the reporting seeds.
#
#   bash docs/results/v04-protocol/study.sh          # the full study (resumes: run it again)
#   SMOKE=1 bash docs/results/v04-protocol/study.sh  # the same table on a tiny workload
#   bash docs/results/v04-protocol/study.sh --parallel 8 --ray-address HOST:PORT
#                                                    # spread over a Ray cluster (flags pass on)
#   python docs/results/v04-protocol/table.py --write # then RESULTS' study tables, from the runs
#
# Constants were chosen on the tuning seeds 0, 1, 2 only (fedcl.study.TUNING_SEEDS); the
# table is read on the reporting seeds 10-14, on which nothing was chosen.
set -euo pipefail
export NO_ALBUMENTATIONS_UPDATE=1

# 13 strategies; FedAvg with server-side statistics and with a GroupNorm network (what a
# drift win owes to normalisation); the joint-training upper and local-only lower bounds
STRATEGIES="fedavg,fedprox,fedmedian,fedtrimmedavg,krum,multikrum,bulyan,fltrust,fedbn,silobn,lwf,ewc,dbc"
STRATEGIES+=",fedavg-server-stats,fedavg+model=unet-group,joint,local-only"
# stain drift (undone by normalisation) and annotation drift (in the weights); the tissue
# and the class stage shift
SCENARIOS="iid,client-drift,client-drift+drift-kind=annotation,catastrophic-forgetting"
SCENARIOS+=",catastrophic-forgetting+stage-shift=classes,drift-and-forgetting"

if [[ "${SMOKE:-0}" == 1 ]]; then
    # one seed, 3 hospitals, 3 stages of 2 rounds, tiny tiles: 102 runs, 8 min 12 s on 2
    # cores (about 5 s a run: the runs share their hospitals' processes; docs/RESULTS.md)
    exec fedcl compare --strategies "$STRATEGIES" --scenarios "$SCENARIOS" --seeds 10 \
        --clients 3 --stages 3 --rounds-per-stage 2 --rounds 6 --image-size 32 \
        --train-tiles 16 --test-tiles 8 --batch-size 8 --reference-size 8 --root-tiles 8 \
        --baseline fedavg --out "${OUT:-runs/v04-protocol-smoke}" "$@"
fi
# --evaluate-rounds read: only the rounds summary.json reads are scored (every figure of
# the table bit-identical, about half the time); a kept every-round run serves as well
exec fedcl compare --strategies "$STRATEGIES" --scenarios "$SCENARIOS" \
    --seeds 10,11,12,13,14 --evaluate-rounds read --baseline fedavg \
    --out "${OUT:-docs/results/v04-protocol}" "$@"
