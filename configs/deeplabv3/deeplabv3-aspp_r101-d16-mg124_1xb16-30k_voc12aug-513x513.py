# Tab. 5, MG(1,2,4) + ASPP(6,12,18) + image pooling: the paper's best model and its reference
# protocol (77.21 on VOC val; also Tab. 6 OS=16, Tab. 8 first row, Tab. 9 batch 16, Tab. 10 16 ->
# 16). ResNet-101, block4 with unit rates (1, 2, 4) x block rate 2 = (2, 4, 8) at output stride 16,
# ASPP with a 1x1 branch, rates (6, 12, 18) and image-level features, 256 filters, BN everywhere
# (Sec. 3.3). Stage 1 (Sec. 4.1): VOC trainaug, batch 16, crop 513, lr 0.007, 30K iterations, BN
# trained with decay 0.9997. Train: `python tools/train.py configs/deeplabv3/<this file>` (or `mim
# train mmseg <this file>`).
_base_ = [
    '../_base_/models/deeplabv3-aspp_r101.py', '../_base_/datasets/voc12aug_513x513.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_30k.py'
]
model = dict(
    output_stride=16,
    backbone=dict(multi_grid=(1, 2, 4)),
    decode_head=dict(atrous_rates=(6, 12, 18), image_pooling=True))
paper_ref = dict(table='Table 5', row='MG(1,2,4), ASPP(6,12,18), image pooling', miou=77.21)
