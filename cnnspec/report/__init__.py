"""A network as a web page: ``cnnspec report`` writes one self-contained HTML file (drawing,
summary table, per-layer details and receptive fields; nothing fetched), ``cnnspec serve`` serves
the same page with an editor that re-analyses the ``.cnn`` text as it is typed.

    from cnnspec.report import write_report, report_data
    write_report(cnnspec.load("specs/resnet18.cnn"), "resnet18.html")
"""
from cnnspec.report.build import page, report_data, write_report

__all__ = ["page", "report_data", "write_report"]
