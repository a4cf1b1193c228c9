# Phase 3: modality teachers, the fusion (joint) teacher, the aligned teacher pool (GPU jobs).


rule train_modality_teacher:
    input:
        index=L.index,
        features=get_modality_features,
        pretrained=get_pretrained_weights,
    output:
        model=L.teacher("{fold}", "{modality}"),
        embeddings=L.embeddings("{fold}", "{modality}"),
        metrics=L.metrics("{fold}", "train_modality_teacher", "{modality}"),
        history=L.history("{fold}", "train_modality_teacher", "{modality}"),
    log:
        "logs/{dataset}/fold{fold}/train_modality_teacher-{modality}.log",
    benchmark:
        "logs/{dataset}/fold{fold}/train_modality_teacher-{modality}.benchmark.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        cfg=config["train_modality_teacher"],
        run=RUN,
        video_input=lambda wc: dataset_cfg(wc)["video_input"],
        params_file=PARAMS_FILE,
    shell:
        "MTPKDOT_RULE=train_modality_teacher OMP_NUM_THREADS={threads} python -m pipeline_steps.train_modality_teacher"
        " --params {params.params_file} --dataset {wildcards.dataset} --fold {wildcards.fold}"
        " --modality {wildcards.modality} > {log} 2>&1"


rule train_fusion_teacher:
    input:
        index=L.index,
        embeddings=get_fold_embeddings,
    output:
        model=L.fusion_teacher("{fold}"),
        metrics=L.metrics("{fold}", "train_fusion_teacher", "fusion"),
        history=L.history("{fold}", "train_fusion_teacher", "fusion"),
    log:
        "logs/{dataset}/fold{fold}/train_fusion_teacher.log",
    benchmark:
        "logs/{dataset}/fold{fold}/train_fusion_teacher.benchmark.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        cfg=config["train_fusion_teacher"],
        run=RUN,
        params_file=PARAMS_FILE,
    shell:
        "MTPKDOT_RULE=train_fusion_teacher OMP_NUM_THREADS={threads} python -m pipeline_steps.train_fusion_teacher"
        " --params {params.params_file} --dataset {wildcards.dataset} --fold {wildcards.fold}"
        " > {log} 2>&1"


rule align_teacher_pool:
    input:
        index=L.index,
        embeddings=get_fold_embeddings,
        fusion=L.fusion_teacher("{fold}"),
        features=get_cross_fit_features,
    output:
        model=L.teacher_pool("{fold}"),
        cache=L.pool_outputs("{fold}"),
        metrics=L.metrics("{fold}", "align_teacher_pool", "pool"),
        history=L.history("{fold}", "align_teacher_pool", "pool"),
        embeddings_figure=L.pool_embeddings("{fold}"),
    log:
        "logs/{dataset}/fold{fold}/align_teacher_pool.log",
    benchmark:
        "logs/{dataset}/fold{fold}/align_teacher_pool.benchmark.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        cfg=config["align_teacher_pool"],
        run=RUN,
        fusion=config["train_fusion_teacher"],
        teachers=config["train_modality_teacher"],
        video_input=lambda wc: dataset_cfg(wc)["video_input"],
        params_file=PARAMS_FILE,
    shell:
        "MTPKDOT_RULE=align_teacher_pool OMP_NUM_THREADS={threads} python -m pipeline_steps.align_teacher_pool"
        " --params {params.params_file} --dataset {wildcards.dataset} --fold {wildcards.fold}"
        " > {log} 2>&1"


rule evaluate_teachers:
    input:
        index=L.index,
        embeddings=get_fold_embeddings,
        fusion=L.fusion_teacher("{fold}"),
        pool=L.teacher_pool("{fold}"),
    output:
        metrics=L.teacher_evaluation("{fold}"),
    log:
        "logs/{dataset}/fold{fold}/evaluate_teachers.log",
    benchmark:
        "logs/{dataset}/fold{fold}/evaluate_teachers.benchmark.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        run=RUN,
        params_file=PARAMS_FILE,
    shell:
        "MTPKDOT_RULE=evaluate_teachers OMP_NUM_THREADS={threads} python -m pipeline_steps.evaluate_teachers"
        " --params {params.params_file} --dataset {wildcards.dataset} --fold {wildcards.fold}"
        " > {log} 2>&1"
