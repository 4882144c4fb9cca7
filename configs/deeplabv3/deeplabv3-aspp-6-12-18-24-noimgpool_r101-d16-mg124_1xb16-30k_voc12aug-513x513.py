# Tab. 5, MG(1,2,4) + ASPP(6,12,18,24), no image pooling: a fourth parallel 3x3 branch with rate 24
# "for longer range context" (slightly worse: at a 33 x 33 feature map a rate-24 filter is mostly
# applied to padding, Fig. 4).
_base_ = ['./deeplabv3-aspp-noimgpool_r101-d16-mg124_1xb16-30k_voc12aug-513x513.py']
model = dict(decode_head=dict(atrous_rates=(6, 12, 18, 24)))
paper_ref = dict(table='Table 5', row='MG(1,2,4), ASPP(6,12,18,24)', miou=76.46)
