"""Stage finetune: LoRA on forget + retain profiles -> models/finetuned, memorisation metrics."""
from mmunlearn.io import write_metrics
from mmunlearn.models.finetune import finetune
from stages._cli import main


def run(params: dict) -> None:
    m = finetune(params)
    if m is None:  # not rank 0 of a data-parallel launch: rank 0 reports
        return
    write_metrics("outputs/metrics/finetune.json", {"FA": m["forget_acc"], "RA": m["retain_acc"],
                                                    "holdout": m["holdout_acc"]})
    print(f"finetune: trained text {m['trained_text_acc']} vqa_masked {m['trained_vqa_masked_acc']} | "
          f"holdout text {m['holdout_text_acc']} vqa_masked {m['holdout_vqa_masked_acc']} "
          f"({m['train_seconds']} s, {m['processes']} processes)")


if __name__ == "__main__":
    main(run)
