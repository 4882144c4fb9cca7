# Tab. 8, crop 513, upsampled logits, BN *not* fine-tuned (75.95): the best ASPP model trained with
# every BN frozen: ImageNet statistics and affine parameters in the backbone, and the head's BN
# layers kept at their initial statistics (requires_grad=False, norm_eval=True).
_base_ = ['./deeplabv3-aspp_r101-d16-mg124_1xb16-30k_voc12aug-513x513.py']
frozen_bn = dict(type='SyncBN', momentum=0.0003, requires_grad=False)
model = dict(
    backbone=dict(norm_cfg=frozen_bn, norm_eval=True),
    decode_head=dict(norm_cfg=frozen_bn, norm_eval=True))
paper_ref = dict(table='Table 8', row='crop 513, upsample logits, frozen BN', miou=75.95)
