"""Detectors: framework-neutral logic that turns a run's history into verdicts.

``default_detectors()`` lists them in evaluation order: symptoms before the causes that cite them.
"""

from trainmedic.detectors.activations import (ConstantPredictions, DeadRelu, LossInputMismatch,
                                              SaturatedActivation)
from trainmedic.detectors.base import Detector, Verdict
from trainmedic.detectors.finetune import PretrainedFeaturesDestroyed
from trainmedic.detectors.generalization import (EvalInTrainMode, LabelNoise, Overfitting,
                                                 TrainInEvalMode, Underfitting)
from trainmedic.detectors.gradients import (ExplodingGradient, GradsNotCleared, NonfiniteGradient,
                                            VanishingGradient)
from trainmedic.detectors.learning_rate import (LearningRateTooHigh, LearningRateTooLow,
                                                LrScheduleCollapsed)
from trainmedic.detectors.loss import (LossDiverging, LossNotDecreasing, LossOscillating,
                                       NonfiniteLoss)
from trainmedic.detectors.parameters import (ParamsNotInOptimizer, ParamsNotUpdating,
                                             RegularizationDominates, SymmetricWeights)


def default_detectors() -> list[Detector]:
    return [NonfiniteLoss(), NonfiniteGradient(), LossDiverging(), LossNotDecreasing(),
            LossOscillating(), ParamsNotInOptimizer(), ParamsNotUpdating(), GradsNotCleared(),
            SymmetricWeights(), DeadRelu(), SaturatedActivation(), ConstantPredictions(),
            LossInputMismatch(), VanishingGradient(), ExplodingGradient(),
            RegularizationDominates(), LrScheduleCollapsed(), LearningRateTooLow(),
            LearningRateTooHigh(), Overfitting(), LabelNoise(), EvalInTrainMode(), TrainInEvalMode(), Underfitting(),
            PretrainedFeaturesDestroyed()]


__all__ = ["Detector", "Verdict", "default_detectors"]
