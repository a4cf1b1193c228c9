# Phase 2: per-modality features in Parquet shards (face crops scattered over shards).
# A data error's one line (file, problem) is also copied to the console (as in data.smk).


rule crop_faces:
    input:
        index=L.index,
    output:
        shard=L.video_shard("{shard}"),
    log:
        "logs/{dataset}/crop_faces-{shard}.log",
    benchmark:
        "logs/{dataset}/crop_faces-{shard}.benchmark.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        cfg=config["crop_faces"],
        on_bad=config["index_dataset"]["on_bad_sample"],
        params_file=PARAMS_FILE,
    shell:
        "MTPKDOT_RULE=crop_faces OMP_NUM_THREADS={threads} python -m pipeline_steps.crop_faces"
        " --params {params.params_file} --dataset {wildcards.dataset} --shard {wildcards.shard}"
        " > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}"


rule extract_physio:
    input:
        index=L.index,
    output:
        shard=L.physio_shard("{physio}"),
    log:
        "logs/{dataset}/extract_physio-{physio}.log",
    benchmark:
        "logs/{dataset}/extract_physio-{physio}.benchmark.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        cfg=config["extract_physio"],
        window=config["crop_faces"]["window_s"],
        on_bad=config["index_dataset"]["on_bad_sample"],
        params_file=PARAMS_FILE,
    shell:
        "MTPKDOT_RULE=extract_physio OMP_NUM_THREADS={threads} python -m pipeline_steps.extract_physio"
        " --params {params.params_file} --dataset {wildcards.dataset} --modality {wildcards.physio}"
        " > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}"


rule extract_audio:
    input:
        index=L.index,
    output:
        shard=L.physio_shard("audio"),
    log:
        "logs/{dataset}/extract_audio.log",
    benchmark:
        "logs/{dataset}/extract_audio.benchmark.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        cfg=config["extract_audio"],
        on_bad=config["index_dataset"]["on_bad_sample"],
        params_file=PARAMS_FILE,
    shell:
        "MTPKDOT_RULE=extract_audio OMP_NUM_THREADS={threads} python -m pipeline_steps.extract_audio"
        " --params {params.params_file} --dataset {wildcards.dataset} > {log} 2>&1"
