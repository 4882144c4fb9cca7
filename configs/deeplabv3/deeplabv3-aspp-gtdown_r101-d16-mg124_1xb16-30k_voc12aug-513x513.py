# Tab. 8, crop 513, ground truth downsampled instead of upsampling the logits (76.01): the loss is
# computed at the logits' resolution on labels nearest-downsampled by the output stride, as DeepLab
# v1/v2 did; "downsampling the groundtruths removes the fine annotations" (Sec. 4.1).
_base_ = ['./deeplabv3-aspp_r101-d16-mg124_1xb16-30k_voc12aug-513x513.py']
model = dict(decode_head=dict(downsample_label=True))
paper_ref = dict(table='Table 8', row='crop 513, downsample labels, fine-tune BN', miou=76.01)
