# Tab. 9, batch 4: the best ASPP model trained with batch size 4 (same lr and iterations); BN
# statistics over fewer images hurt (Sec. 4.1, App. A). With several GPUs keep SyncBN so that the
# statistics are those of the whole batch.
_base_ = ['./deeplabv3-aspp_r101-d16-mg124_1xb16-30k_voc12aug-513x513.py']
train_dataloader = dict(batch_size=4)
paper_ref = dict(table='Table 9', row='batch 4', miou=64.43)
