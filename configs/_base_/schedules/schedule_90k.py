# Cityscapes schedule (App. C): "the same training protocol as before except that we employ 90K
# training iterations": poly from lr 0.007, SGD momentum 0.9, weight decay 1e-4.
_base_ = ['./schedule_30k.py']
max_iters = 90000
interval = 9000
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=interval)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=interval))
