# Tab. 8, crop 513, upsampled logits, BN *not* fine-tuned (75.95): the best ASPP model trained with
# every BN frozen as the official code does with fine_tune_batch_norm=False: BN runs in inference
# mode (moving statistics used, not updated: norm_eval=True), while its scale (gamma) and offset
# (beta) stay trainable variables (requires_grad=True). The head's new BN layers thus keep their
# initial statistics but learn their affine parameters.
_base_ = ['./deeplabv3-aspp_r101-d16-mg124_1xb16-30k_voc12aug-513x513.py']
frozen_bn = dict(type='SyncBN', momentum=0.0003, requires_grad=True)
model = dict(
    backbone=dict(norm_cfg=frozen_bn, norm_eval=True),
    decode_head=dict(norm_cfg=frozen_bn, norm_eval=True))
paper_ref = dict(table='Table 8', row='crop 513, upsample logits, frozen BN', miou=75.95)
