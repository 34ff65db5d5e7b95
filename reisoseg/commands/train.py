"""`reisoseg train CONFIGURATION TRAINER TASK FOLD`: nnU-Net v1 (or, with --engine v2, v2) training with ReIsoSeg's
trainers.

Also installed as `run_training_reisoseg`, the reference implementation's name, with the positional form its README
documents (which the reference's own script does not accept).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from reisoseg.commands.options import add_output_options, engine_log
from reisoseg.console import engine_output
from reisoseg.devices import DEVICE_CHOICES
from reisoseg.engines import v2_engine_module
from reisoseg.errors import ReIsoSegError
from reisoseg.io.nnunet_task import ENGINES
from reisoseg.layout import DEFAULT_PLANS
from reisoseg.nnunet_v1.training_options import TrainingOptions, effective_plans_identifier, fold_output_folder
from reisoseg.optimizers import OPTIMIZERS

DESCRIPTION = ("Train one fold with a ReIsoSeg trainer (ReIsoSegTrainer picks the pooling pattern from the planned "
               "spacing; ReIsoSegRMA1/2/4/8V6Trainer fix it), nnUNetTrainerV2EM (the nnU-Net baseline with our "
               "checkpoints) or any nnU-Net v1 trainer such as nnUNetTrainerV2. "
               "Needs nnUNet_raw_data_base, nnUNet_preprocessed and RESULTS_FOLDER, and a task planned with "
               "nnUNet_plan_and_preprocess. With --engine v2: ReIsoSeg trainers or nnUNetTrainer (v2's baseline) "
               "on a dataset planned with nnUNetv2_plan_and_preprocess (nnUNet_raw, nnUNet_preprocessed, "
               "nnUNet_results).")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configuration", help="nnU-Net configuration; ReIsoSeg is 3D: use 3d_fullres")
    parser.add_argument("trainer", help="trainer class, e.g. ReIsoSegTrainer, ReIsoSegRMA4V6Trainer, nnUNetTrainerV2")
    parser.add_argument("task", help="task as Task501_Name, 501 or Name (v2: dataset id or DatasetXXX_Name)")
    parser.add_argument("--engine", choices=ENGINES, default="v1",
                        help="nnU-Net v1 (default) or v2 (the reisoseg[nnunetv2] extra; not all options yet)")
    parser.add_argument("fold", help="fold 0-4 of the 5-fold split, or 'all'")
    parser.add_argument("-val", "--validation_only", action="store_true",
                        help="only run the validation of a trained fold")
    parser.add_argument("-c", "--continue_training", action="store_true",
                        help="continue from the fold's latest checkpoint")
    parser.add_argument("-p", "--plans_identifier", default=DEFAULT_PLANS,
                        help="plans to use (default: %(default)s)")
    parser.add_argument("--npz", action="store_true",
                        help="also save validation softmax as .npz (needed to find the best ensemble)")
    parser.add_argument("--fp32", action="store_true",
                        help="train in float32 on CUDA (default: mixed precision on CUDA; always fp32 on CPU/MPS)")
    parser.add_argument("--cpu_bf16", action="store_true",
                        help="on the CPU, train in bfloat16 autocast: faster on CPUs with bf16 instructions "
                             "(AVX512-BF16, AMX), slower on others (default: float32)")
    parser.add_argument("--valbest", action="store_true", help="with -val: validate model_best instead of the final")
    parser.add_argument("--deterministic", action="store_true",
                        help="seed numpy and torch (the PI module's randomness included); slower on GPU")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed network initialisation and patch sampling (augmentation workers fork from it); "
                             "unlike --deterministic, cuDNN stays fast")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default=None,
                        help="device to train on (default: cuda, else mps, else cpu)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="number of epochs (default: 600 for ReIsoSeg trainers, 1000 for nnU-Net's)")
    parser.add_argument("--iterations_per_epoch", "--iterations-per-epoch", type=int, default=None,
                        help="training iterations per epoch (default: 250); validation uses a fifth of it")
    parser.add_argument("--val_iterations_per_epoch", type=int, default=None,
                        help="validation iterations per epoch (default: 50, or a fifth of --iterations_per_epoch)")
    parser.add_argument("--lambda", dest="ani_weight", type=float, default=None,
                        help="weight of L_ani in (1-lambda)*L_iso + lambda*L_ani (default: 0.5, the reference)")
    parser.add_argument("--budget_minutes", dest="time_budget_minutes", type=float, default=None,
                        help="ReIsoSeg trainers and nnUNetTrainerV2EM: fit the number of epochs (and the poly LR "
                             "schedule) to this wall time, refitted after every epoch (default: no budget, use "
                             "--epochs)")
    parser.add_argument("--patch_size", type=int, nargs=3, metavar=("Z", "Y", "X"), default=None,
                        help="train on plans derived for this patch (e.g. 16 64 64 on a CPU; identifier "
                             "PLANS_patchZxYxX, its own model folder); ReIsoSeg trainers round it down to what their "
                             "pooling pattern divides and log the estimated memory")
    parser.add_argument("--batch_size", type=int, default=None, help="the same for the batch size")
    parser.add_argument("--gpu_memory_gb", type=float, default=None,
                        help="shrink the patch until a training step fits this much memory (default on CUDA: the "
                             "GPU's memory; on CPU: no limit). ReIsoSeg trainers and nnUNetTrainerV2EM, each with an "
                             "estimate of its own network")
    parser.add_argument("--checkpoint_minutes", type=float, default=None, metavar="N",
                        help="save model_latest at the end of an epoch once N minutes have passed since the last save "
                             "(default: 5; 0: every epoch). Saves are atomic, keep the RNG state, and SIGTERM "
                             "saves and stops (exit 143): continue with -c. ReIsoSeg trainers and nnUNetTrainerV2EM "
                             "(nnU-Net's own trainers save every 50 epochs)")
    parser.add_argument("--em_augmentation", action="store_true",
                        help="also augment with serial-section defects: missing/blank, shifted (labels follow), "
                             "blurred and contrast-jumping sections, each in 15%% of the patches (ReIsoSeg trainers, "
                             "nnUNetTrainerV2EM on v1 and nnUNetTrainerEM on v2; off by default, as in the reference "
                             "method)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                        help="sgd: nnU-Net's (momentum 0.99, Nesterov; the default, as in the reference method); "
                             "adamw: learns more in short budgets of a few dozen iterations, e.g. a CPU demo "
                             "(ReIsoSeg trainers, nnUNetTrainerV2EM on v1 and nnUNetTrainerEM on v2; a run continues "
                             "only with its own)")
    parser.add_argument("--initial_lr", type=float, default=None,
                        help="learning rate the poly schedule starts from (default: 0.01, nnU-Net's; about 0.003 "
                             "suits adamw)")
    parser.add_argument("--gpus", type=int, default=1, metavar="N",
                        help="train on N GPUs of this machine: N processes started with torchrun, one rank each "
                             "(DistributedDataParallel, the plans' batch split over them); with --device cpu, N CPU "
                             "processes (gloo). ReIsoSeg trainers and nnUNetTrainerV2EM. On several machines, run "
                             "torchrun yourself: torchrun --nnodes ... -m reisoseg.commands.train ARGS")
    parser.add_argument("--disable_validation_inference", action="store_true",
                        help="skip the sliding-window validation of the held-out fold after training")
    parser.add_argument("--disable_postprocessing_on_folds", action="store_true",
                        help="skip nnU-Net's connected-component postprocessing search after validation")
    add_output_options(parser)
    parser.set_defaults(handler=run)


def add_parser(subparsers) -> None:
    configure_parser(subparsers.add_parser("train", help="train a fold (nnU-Net v1 run_training)",
                                           description=DESCRIPTION))


def launch(processes: int, argv: Sequence[str]) -> None:
    """Run this command again as `processes` ranks under torchrun (torch.distributed.run), without --gpus."""
    import subprocess

    arguments = list(argv)
    at = next(i for i, a in enumerate(arguments) if a == "--gpus" or a.startswith("--gpus="))
    del arguments[at:at + (1 if "=" in arguments[at] else 2)]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                             str(processes), "-m", "reisoseg.commands.train", *arguments])
    if result.returncode != 0:
        raise ReIsoSegError(f"distributed training stopped: a rank exited with status {result.returncode} (its "
                            f"message is above)")


def run(args: argparse.Namespace) -> str | None:
    if args.gpus < 1:
        raise ReIsoSegError(f"--gpus must be at least 1, got {args.gpus}")
    if args.gpus > 1 and args.engine == "v2":
        raise ReIsoSegError("--gpus on the v2 engine: not yet (v2's own DDP will run it)")
    if args.gpus > 1:
        launch(args.gpus, sys.argv[2:] if sys.argv[1:2] == ["train"] else sys.argv[1:])
        return None
    if args.verbose:
        os.environ.setdefault("nnunet_use_progress_bar", "1")  # nnU-Net's bar per epoch's iterations

    options = TrainingOptions(
        validation_only=args.validation_only, continue_training=args.continue_training, npz=args.npz,
        plans_identifier=args.plans_identifier, fp32=args.fp32, cpu_bf16=args.cpu_bf16, valbest=args.valbest,
        deterministic=args.deterministic, seed=args.seed, device=args.device, epochs=args.epochs,
        iterations_per_epoch=args.iterations_per_epoch, val_iterations_per_epoch=args.val_iterations_per_epoch,
        ani_weight=args.ani_weight, time_budget_minutes=args.time_budget_minutes,
        run_validation=not args.disable_validation_inference,
        disable_postprocessing_on_folds=args.disable_postprocessing_on_folds, progress=not args.no_progress,
        patch_size=args.patch_size, batch_size=args.batch_size, gpu_memory_gb=args.gpu_memory_gb,
        checkpoint_minutes=args.checkpoint_minutes, em_augmentation=args.em_augmentation, optimizer=args.optimizer,
        initial_lr=args.initial_lr)
    if args.engine == "v2":
        folder = _train_on_v2(args, options)
    else:
        folder = fold_output_folder(args.configuration, args.trainer, args.task, args.fold,
                                    effective_plans_identifier(options))
        with engine_output(engine_log(folder, args.verbose), verbose=args.verbose):
            from reisoseg.nnunet_v1.training import run_training  # imports nnU-Net, whose banner goes to the log

            folder = run_training(args.configuration, args.trainer, args.task, args.fold, options)
    if os.environ.get("RANK", "0") == "0":  # one line for a distributed run too
        print(f"done: {folder}")
    return folder


def _train_on_v2(args: argparse.Namespace, options: TrainingOptions):
    """The same run on nnU-Net v2; its messages go to the fold's engine.log."""
    training = v2_engine_module("training")
    folder = training.fold_output_folder(args.configuration, args.trainer, args.task, args.fold,
                                         training.trained_plans_identifier(options))
    with engine_output(engine_log(folder, args.verbose), verbose=args.verbose):
        return training.run_training(args.configuration, args.trainer, args.task, args.fold, options)


def main(argv: Sequence[str] | None = None) -> int:
    """`run_training_reisoseg`: the same command under the reference's name."""
    from reisoseg.commands.main import add_flag_names, run_command

    parser = argparse.ArgumentParser(prog="run_training_reisoseg", description=DESCRIPTION)
    configure_parser(parser)
    add_flag_names(parser)
    return run_command(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
