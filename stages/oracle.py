"""Stage oracle: the fine-tuning recipe on what remains after each forget set -> models/oracle/<name>."""
from mmunlearn.io import write_metrics
from mmunlearn.models.finetune import train_oracles
from stages._cli import main


def run(params: dict) -> None:
    m = train_oracles(params)
    # the worst case over the oracles: the highest accuracy on the facts they never saw
    write_metrics("outputs/metrics/oracle.json", {"FA": max((o["forget_acc"] for o in m.values()), default=None),
                                                  "RA": min((o["kept_acc"] for o in m.values()), default=None)})


if __name__ == "__main__":
    main(run)
