# Tab. 10, train OS=8, eval OS=8 (75.62): the best ASPP model trained at output stride 8 with the
# largest batch the paper could fit there (6); block3 rate 2, block4 rate 4 x (1, 2, 4), ASPP rates
# (12, 24, 36).
_base_ = ['./deeplabv3-aspp_r101-d16-mg124_1xb16-30k_voc12aug-513x513.py']
model = dict(output_stride=8)
train_dataloader = dict(batch_size=6)
paper_ref = dict(table='Table 10', row='train OS=8, eval OS=8', miou=75.62)
