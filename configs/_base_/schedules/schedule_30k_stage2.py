# Stage-2 schedule (Sec. 4.1): "another 30K iterations and smaller base learning rate = 0.001",
# same poly policy. The stage-2 experiment also freezes BN and trains at output stride 8.
_base_ = ['./schedule_30k.py']
optimizer = dict(lr=0.001)
optim_wrapper = dict(optimizer=optimizer)
