# Phase 5: the results table over folds (CSV + Markdown), logged to the MLflow parent run.


rule report:
    input:
        evaluations=get_fold_evaluations,
    output:
        csv=L.report_csv,
        md=L.report_md,
    log:
        "logs/{dataset}/report.log",
    benchmark:
        "logs/{dataset}/report.benchmark.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cfg=config["report"],
        params_file=PARAMS_FILE,
    shell:
        "MTPKDOT_RULE=report python -m pipeline_steps.report --params {params.params_file}"
        " --dataset {wildcards.dataset} > {log} 2>&1"
