# Stage-1 schedule of the paper (Sec. 4.1): 30K iterations, "poly" learning rate
# lr * (1 - iter / max_iter) ** 0.9 from lr 0.007 down to 0, SGD with momentum 0.9 and weight decay
# 1e-4 (the official TF code's values; the paper states the policy, the initial lr and the
# iterations only).
#
# mmseg's schedule base supplies the loops and hooks; its optimiser values (lr 0.01, wd 5e-4,
# poly floor 1e-4) are mmseg's, not the paper's, and are replaced here.
_base_ = ['mmseg::_base_/schedules/schedule_20k.py']
max_iters = 30000
interval = 3000
optimizer = dict(type='SGD', lr=0.007, momentum=0.9, weight_decay=1e-4)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=optimizer,
    clip_grad=None,
    # The official code regularises conv weights only (slim.l2_regularizer is the conv2d
    # `weights_regularizer`; slim.batch_norm's gamma/beta and the logits' biases have none): no
    # decay on BN scales/offsets or on biases. It also doubles the gradient of every variable
    # named 'biases' (train_utils.get_model_gradient_multipliers), which with momentum SGD is
    # a doubled learning rate; mmengine's bias_lr_mult skips norm biases, as 'biases' excludes
    # slim's BN 'beta'. The only conv with a bias here is the classifier (conv_seg).
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, bias_lr_mult=2.0))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=interval)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=interval))
