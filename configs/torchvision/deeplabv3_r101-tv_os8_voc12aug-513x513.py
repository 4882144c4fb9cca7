# torchvision's `deeplabv3_resnet101`, fine-tuned on VOC trainaug with the paper's COCO
# fine-tuning lr (Tab. 6). See the ResNet-50 config for every architectural difference from the
# paper's model; only the depth changes. Convert first:
#
#   python tools/convert_torchvision.py deeplabv3_resnet101_coco-586e9e4e.pth \
#       checkpoints/deeplabv3_r101-tv_coco.pth
_base_ = ['./deeplabv3_r50-tv_os8_voc12aug-513x513.py']
model = dict(backbone=dict(depth=101))
load_from = 'checkpoints/deeplabv3_r101-tv_coco.pth'
