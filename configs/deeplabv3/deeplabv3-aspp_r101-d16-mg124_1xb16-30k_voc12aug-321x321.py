# Tab. 8, crop 321 (67.22): the best ASPP model trained on 321 x 321 crops, the crop of DeepLab
# v1/v2. Large atrous rates then mostly see padding (Sec. 4.1, "Crop size"). Evaluation still pads
# the images to 513 x 513.
_base_ = [
    '../_base_/models/deeplabv3-aspp_r101.py', '../_base_/datasets/voc12aug_321x321.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_30k.py'
]
model = dict(
    output_stride=16,
    data_preprocessor=dict(size=(321, 321)),
    backbone=dict(multi_grid=(1, 2, 4)),
    decode_head=dict(atrous_rates=(6, 12, 18), image_pooling=True))
paper_ref = dict(table='Table 8', row='crop 321, upsample logits, fine-tune BN', miou=67.22)
