# Phase 4: the visual-only student of each method and student seed (GPU jobs), then its
# test-fold evaluation. The teachers it reads are trained once per fold (run.seed).


rule train_student:
    input:
        index=L.index,
        video=get_student_video_inputs,
        teachers=get_student_teacher_inputs,
    output:
        model=L.student("{fold}", "{method}", "{seed}"),
        metrics=L.metrics("{fold}", "train_student", "{method}", "{seed}"),
        history=L.history("{fold}", "train_student", "{method}", "{seed}"),
        similarity=L.student_similarity("{fold}", "{method}", "{seed}"),
    log:
        "logs/{dataset}/fold{fold}/seed{seed}/train_student-{method}.log",
    benchmark:
        "logs/{dataset}/fold{fold}/seed{seed}/train_student-{method}.benchmark.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        cfg=config["train_student"],
        run=RUN,
        params_file=PARAMS_FILE,
    shell:
        "MTPKDOT_RULE=train_student OMP_NUM_THREADS={threads} python -m pipeline_steps.train_student"
        " --params {params.params_file} --dataset {wildcards.dataset} --fold {wildcards.fold}"
        " --method {wildcards.method} --seed {wildcards.seed} > {log} 2>&1"


rule evaluate:
    input:
        index=L.index,
        video=[L.video_shard(i) for i in range(N_SHARDS)],
        teacher=L.teacher("{fold}", "video"),
        student=L.student("{fold}", "{method}", "{seed}"),
    output:
        metrics=L.evaluation("{fold}", "{method}", "{seed}"),
        predictions=L.predictions("{fold}", "{method}", "{seed}"),
    log:
        "logs/{dataset}/fold{fold}/seed{seed}/evaluate-{method}.log",
    benchmark:
        "logs/{dataset}/fold{fold}/seed{seed}/evaluate-{method}.benchmark.tsv"
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
        " --method {wildcards.method} --seed {wildcards.seed} > {log} 2>&1"
