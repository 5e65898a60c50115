"""Stage oracle: the fine-tuning recipe on what remains after each forget set -> models/oracle/<name>."""
from mmunlearn.models.finetune import train_oracles
from stages._cli import main


if __name__ == "__main__":
    main(train_oracles)
