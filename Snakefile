# mtpkdot: MT-PKDOT from face video, EDA/ECG/EMG or audio to a visual-only student.
# Run: snakemake --cores all            (local)
#      snakemake --profile slurm        (SLURM cluster, profile in ./slurm)
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/teachers.smk"
include: "workflow/rules/student.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_outputs,
