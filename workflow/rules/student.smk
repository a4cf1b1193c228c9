# Phase 4: the visual-only student of each method (GPU jobs), then its test-fold evaluation.


rule train_student:
    input:
        index=L.index,
        video=get_student_video_inputs,
        teachers=get_student_teacher_inputs,
    output:
        model=L.student("{fold}", "{method}"),
        metrics=L.metrics("{fold}", "train_student", "{method}"),
        history=L.history("{fold}", "train_student", "{method}"),
        similarity=L.student_similarity("{fold}", "{method}"),
    log:
        "logs/{dataset}/fold{fold}/train_student-{method}.log",
    benchmark:
        "logs/{dataset}/fold{fold}/train_student-{method}.benchmark.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        cfg=config["train_student"],
        run=config["run"],
        params_file=PARAMS_FILE,
    shell:
        "MTPKDOT_RULE=train_student OMP_NUM_THREADS={threads} python -m pipeline_steps.train_student"
        " --params {params.params_file} --dataset {wildcards.dataset} --fold {wildcards.fold}"
        " --method {wildcards.method} > {log} 2>&1"


rule evaluate:
    input:
        index=L.index,
        video=[L.video_shard(i) for i in range(N_SHARDS)],
        teacher=L.teacher("{fold}", "video"),
        student=L.student("{fold}", "{method}"),
    output:
        metrics=L.evaluation("{fold}", "{method}"),
        predictions=L.evaluation("{fold}", "{method}").with_suffix(".predictions.csv"),
    log:
        "logs/{dataset}/fold{fold}/evaluate-{method}.log",
    benchmark:
        "logs/{dataset}/fold{fold}/evaluate-{method}.benchmark.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        cfg=config["evaluate"],
        params_file=PARAMS_FILE,
    shell:
        "MTPKDOT_RULE=evaluate OMP_NUM_THREADS={threads} python -m pipeline_steps.evaluate"
        " --params {params.params_file} --dataset {wildcards.dataset} --fold {wildcards.fold}"
        " --method {wildcards.method} > {log} 2>&1"
