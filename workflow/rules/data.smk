# Phase 1: the dataset (demo generation) and its index with subject-independent folds.


rule make_demo_data:
    output:
        manifest=L.demo_manifest,
    log:
        "logs/{dataset}/make_demo_data.log",
    benchmark:
        "logs/{dataset}/make_demo_data.benchmark.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        cfg=lambda wc: demo_settings(config, wc.dataset),
        ds=lambda wc: config["datasets"][wc.dataset],
        params_file=PARAMS_FILE,
    shell:
        "MTPKDOT_RULE=make_demo_data python -m pipeline_steps.make_demo_data --params {params.params_file}"
        " --dataset {wildcards.dataset} --manifest {output.manifest} > {log} 2>&1"


# A user's dataset: its layout's inputs (pipeline_steps/dataset_inputs.py), files included, so a
# changed annotation, video or biosignal file re-triggers indexing. A data error's one line (file,
# problem) is also shown on the console.
rule index_dataset:
    input:
        source=get_dataset_source,
    output:
        index=L.index,
    log:
        "logs/{dataset}/index_dataset.log",
    benchmark:
        "logs/{dataset}/index_dataset.benchmark.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        cfg=config["index_dataset"],
        ds=lambda wc: config["datasets"][wc.dataset],
        checks=[config["crop_faces"]["window_s"], config["extract_physio"]],
        params_file=PARAMS_FILE,
    shell:
        "MTPKDOT_RULE=index_dataset python -m pipeline_steps.index_dataset --params {params.params_file}"
        " --dataset {wildcards.dataset} > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}"
