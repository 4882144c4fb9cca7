# Tab. 7, DeepLabv3 (85.7 on VOC 2012 *test*): the test-set model, stage 2 of Sec. 4.1 / 4.3. The
# COCO-pretrained stage-1 model (`deeplabv3-aspp_r101-d16-coco-pre_...`) is "further fine-
# tuned on the official PASCAL VOC 2012 trainval set": output stride 8 "so that annotation details
# are kept", batch normalisation frozen, lr 0.001 for another 30K iterations, and bootstrapping on
# hard images (images containing bicycle, chair, dining table, potted plant or sofa are duplicated;
# the paper does not say how often: `repeat_factor`). The test set has no public labels:
# `tools/test.py ... --tta` (OS 8, MS, flip) writes the predictions as PNGs for the evaluation
# server instead of computing a mIoU. Geometry: stage 1's, torchvision's COCO weights' (no
# multi-grid, contracted rates), here at OS 8 as those weights were trained.
_base_ = [
    '../_base_/models/deeplabv3-aspp_r101.py', '../_base_/datasets/voc12trainval_513x513.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_30k_stage2.py'
]
# Frozen BN (Sec. 4.1), as the official fine_tune_batch_norm=False: BN in inference mode (running
# statistics used, not updated: norm_eval=True), gamma/beta still trained (requires_grad=True).
frozen_bn = dict(type='SyncBN', momentum=0.0003, requires_grad=True)
model = dict(
    output_stride=8,
    backbone=dict(
        stem='torchvision', multi_grid=(1, 1, 1), contract_dilation=True, norm_cfg=frozen_bn,
        norm_eval=True, init_cfg=None),
    decode_head=dict(
        atrous_rates=(6, 12, 18), image_pooling=True, project_dropout=0.5, num_extra_convs=1,
        dropout_ratio=0.0, norm_cfg=frozen_bn, norm_eval=True))
# Start from stage 1: the COCO-pretrained model fine-tuned on trainaug.
load_from = ('work_dirs/deeplabv3-aspp_r101-d16-coco-pre_1xb16-30k_voc12aug-513x513/'
             'iter_30000.pth')
train_dataloader = dict(
    sampler=dict(
        _delete_=True,
        type='InfiniteBootstrapSampler',
        hard_classes=('bicycle', 'chair', 'diningtable', 'pottedplant', 'sofa'),
        repeat_factor=2.0,
        shuffle=True))
# The val images are now training images: no validation during training.
val_dataloader = None
val_evaluator = None
val_cfg = None
# VOC 2012 test (unpack VOC2012test.tar into the same VOCdevkit): predictions are written as
# label PNGs for the evaluation server, nothing is scored locally.
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]
# There are no test labels: the file check of CheckedPascalVOCDataset (image *and* label of every
# listed name) is switched off; the dataset still names an unreadable image.
test_dataloader = dict(
    dataset=dict(
        ann_file='ImageSets/Segmentation/test.txt', check_files=False, pipeline=test_pipeline))
test_evaluator = dict(
    type='IoUMetric', iou_metrics=['mIoU'], format_only=True,
    output_dir='work_dirs/format_results/voc12_test')
tta_pipeline = _base_.tta_pipeline
del tta_pipeline[1].transforms[2]  # no test labels to load
paper_ref = dict(table='Table 7', row='DeepLabv3', miou=85.7)
