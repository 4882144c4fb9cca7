# The demo model on 128 x 128 SyntheticShapes: about two thirds of the training time of the 192 px
# demo for about 10 mIoU less (the OS-16 feature map is 8 x 8). For quick checks and tests:
#   python tools/demo.py --config \
#       configs/demo/deeplabv3_r18-d16-mg12_1xb8-1k_synthetic-shapes-128x128.py
_base_ = ['./deeplabv3_r18-d16-mg12_1xb8-1k_synthetic-shapes-192x192.py']
crop_size = (128, 128)
data_preprocessor = dict(size=crop_size, test_cfg=dict(size=crop_size))  # also used by --tta
model = dict(data_preprocessor=data_preprocessor)
train_pipeline = _base_.train_pipeline
train_pipeline[3].scale = crop_size  # RandomResize
train_pipeline[4].crop_size = crop_size  # RandomCrop
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
