"""Citations shared by several method folders: PTNL's models (CLS-Tuning, Full-Prompt-Tuning, the linear
classifiers and TEnc-FT) all come from one paper."""

PTNL_PAPER = (
    "Wu et al., Why Is Prompt Tuning for Vision-Language Models Robust to Noisy Labels?, ICCV 2023",
    "https://arxiv.org/abs/2307.11978",
    """@inproceedings{wu2023ptnl,
  title     = {Why Is Prompt Tuning for Vision-Language Models Robust to Noisy Labels?},
  author    = {Wu, Cheng-En and Tian, Yu and Yu, Haichao and Wang, Heng and Morgado, Pedro and Hu, Yu Hen and
               Yang, Linjie},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2023}
}""",
)
