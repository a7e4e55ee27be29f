# ovdense in mmseg: runtime shared by every shipped config (test loop only).
custom_imports = dict(imports=["ovdense.integrations.mmseg"], allow_failed_imports=False)
default_scope = "mmseg"
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),
)
log_processor = dict(by_epoch=False)
log_level = "INFO"
load_from = None
resume = False
test_cfg = dict(type="TestLoop")
# mmseg's metric and ovdense's evaluator score the same predictions (ovdense/... keys)
test_evaluator = [
    dict(type="IoUMetric", iou_metrics=["mIoU"]),
    dict(type="OVDenseSemSegMetric"),
]
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
)
# the vocabulary from the dataset's metainfo when the model has none (model.classnames /
# model.benchmark take precedence)
custom_hooks = [dict(type="OVDenseVocabularyHook")]
