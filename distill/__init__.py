"""Teacher labelling, two-phase distillation, evaluation and export.

Importing the package registers Distillery's extractive QA pipeline with transformers under
`distill.qa_pipeline.TASK`, so `pipeline("extractive-question-answering", model=EXPORT)` needs no remote code.
The registration waits until `transformers.pipelines` is imported (it costs seconds of imports that labelling,
training and the command line never need).
"""

import importlib.abc
import importlib.util
import sys

_PIPELINES = "transformers.pipelines"


def _register_qa_pipeline() -> None:
    from transformers import AutoModelForQuestionAnswering
    from transformers.pipelines import PIPELINE_REGISTRY

    from distill.qa_pipeline import TASK, ExtractiveQuestionAnsweringPipeline

    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=ExtractiveQuestionAnsweringPipeline,
                                        pt_model=AutoModelForQuestionAnswering, type="text")


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds `transformers.pipelines` the usual way and registers the pipeline once that module has run."""

    def find_spec(self, name, path, target=None):
        if name != _PIPELINES:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None:
            return None
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            _register_qa_pipeline()

        spec.loader.exec_module = exec_module
        return spec


if _PIPELINES in sys.modules:
    _register_qa_pipeline()
else:
    sys.meta_path.insert(0, _RegisterAfterImport())
