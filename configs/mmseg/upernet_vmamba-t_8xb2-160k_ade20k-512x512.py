# UperNet, VMamba-T backbone, ADE20K 512x512, 160k iterations, 8 GPUs x 2 images.
# Recipe of the VMamba paper (as Swin's mmseg configs): AdamW lr 6e-5, wd 0.01, 1500-iteration linear
# warm-up then poly (power 1) decay, no decay on norms nor on the SSM parameters A_logs / Ds.
# Everything else is mmseg's own Swin-T UperNet 160k config, inherited as is.
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']

custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'  # noqa
model = dict(
    backbone=dict(
        _delete_=True,
        type='VMambaBackbone',
        size='tiny',
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))

# the base's AdamW(lr=6e-5, weight_decay=0.01), LinearLR(1500 its) + PolyLR schedule are kept;
# its paramwise_cfg is replaced by ours
optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={
            'norm': dict(decay_mult=0.),
            'A_logs': dict(decay_mult=0.),
            'Ds': dict(decay_mult=0.),
        }))

train_dataloader = dict(batch_size=2)
