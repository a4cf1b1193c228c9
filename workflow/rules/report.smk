# Phase 5: the results report over folds (CSV, Markdown, HTML + figures), logged to the MLflow
# parent run. `snakemake --report report.html` shows the table, the page and the figures.


rule report:
    input:
        index=L.index,
        evaluations=get_fold_evaluations,
        figures=get_report_figure_inputs,
        teachers=get_teacher_evaluations,
    output:
        csv=report(
            L.report_csv,
            caption="../report/table.rst",
            category="Results",
            labels={"dataset": "{dataset}", "item": "table (CSV)"},
        ),
        paired=report(
            L.paired_csv,
            caption="../report/paired.rst",
            category="Results",
            labels={"dataset": "{dataset}", "item": "paired comparison (CSV)"},
        ),
        paired_units=L.paired_units_csv,
        md=L.report_md,
        html=report(
            L.report_html,
            caption="../report/page.rst",
            category="Results",
            labels={"dataset": "{dataset}", "item": "report page"},
        ),
        figures=report(
            directory(L.figures_dir),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
            labels={"dataset": "{dataset}", "figure": "{name}"},
        ),
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
