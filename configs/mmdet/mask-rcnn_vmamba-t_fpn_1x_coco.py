# Mask R-CNN + FPN, VMamba-T backbone, 1x schedule (12 epochs), COCO.
# Recipe of the VMamba paper (arXiv 2401.10166, as Swin's): AdamW lr 1e-4, wd 0.05, no decay on norms
# nor on the SSM parameters A_logs / Ds, 8 GPUs x 2 images. Everything else is mmdet's own Swin-T
# Mask R-CNN 1x config (which is mmdet's Mask R-CNN R-50 FPN 1x with AdamW), inherited as is.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']

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
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True,  # the base's Swin-only keys (absolute_pos_embed, ...) do not apply
        custom_keys={
            'norm': dict(decay_mult=0.),
            'A_logs': dict(decay_mult=0.),
            'Ds': dict(decay_mult=0.),
        }))

# 8 GPUs x 2 images = 16 images per iteration (lr 1e-4 is for that total)
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
