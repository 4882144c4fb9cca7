# Tab. 12, OS=16 (77.23 on Cityscapes val): the best ASPP model trained on Cityscapes train_fine
# (2,975 images) with "the same training protocol as before except that we employ 90K training
# iterations, crop size equal to 769, and running inference on the whole image" (App. C).
_base_ = [
    '../_base_/models/deeplabv3-aspp_r101.py', '../_base_/datasets/cityscapes_769x769.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_90k.py'
]
model = dict(
    output_stride=16,
    # Training crops padded to 769 x 769; whole 1024 x 2048 images padded to 1025 x 2049.
    data_preprocessor=dict(size=(769, 769), test_cfg=dict(size=(1025, 2049))),
    backbone=dict(multi_grid=(1, 2, 4)),
    decode_head=dict(atrous_rates=(6, 12, 18), image_pooling=True, num_classes=19))
paper_ref = dict(table='Table 12', row='OS=16', miou=77.23)
