# Tab. 5, MG(1,2,4) + ASPP(6,12,18), no image pooling: the ASPP of DeepLab v2 plus BN, without the
# image-level branch that the paper adds for global context (Sec. 3.3).
_base_ = ['./deeplabv3-aspp_r101-d16-mg124_1xb16-30k_voc12aug-513x513.py']
model = dict(decode_head=dict(image_pooling=False))
paper_ref = dict(table='Table 5', row='MG(1,2,4), ASPP(6,12,18)', miou=76.58)
