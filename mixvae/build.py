"""Building a model and a guide from a configuration, and checking the pair.

A pair is valid when the guide provides a subset of the prior's latent sites,
and every latent site it does not provide is one the model sums out by
enumeration.  A site that exists only in the guide would not be a latent of
the model at all: for a discrete one, the objective would score
``log q(k) + log q(z | k)`` instead of ``log q(z)`` and inflate the "bound" by
up to log K.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import math

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from mixvae.config import TrainConfig, torch_dtype
from mixvae.errors import ConfigError, IncompatiblePairError, PluginError, SiteDeclarationError
from mixvae.guides import GUIDES, Guide
from mixvae.models import LIKELIHOODS, PRIORS, VAE, Prior
from mixvae.networks import (
    AUTO,
    GIVEN,
    NETWORKS,
    Network,
    data_shape_of,
    given_decoder,
    given_encoder,
    glorot_init_,
    resolve,
)


def pair_problem(prior: type[Prior] | Prior, guide: type[Guide] | Guide) -> str | None:
    """Why a prior and a guide (classes or instances) cannot be paired, or ``None``."""
    extra = [s for s in guide.provides if s not in prior.latent_sites]
    if extra:
        why = (
            " (a discrete site only the guide has would inflate the ELBO by up to log K)"
            if guide.discrete_site in extra
            else ""
        )
        return f"guide {guide.name!r} provides {extra} that prior {prior.name!r} does not have{why}"
    missing = [s for s in prior.latent_sites if s not in guide.provides and s not in prior.enumerated_sites]
    if missing:
        return (
            f"prior {prior.name!r} has the continuous latent sites {missing} that guide "
            f"{guide.name!r} does not provide"
        )
    return None


def compatible_priors(guide_name: str) -> list[str]:
    """The priors a registered guide can pair with."""
    guide = GUIDES[guide_name]
    return [name for name, prior in PRIORS.items() if pair_problem(prior, guide) is None]


def compatible_guides(prior_name: str) -> list[str]:
    """The guides a registered prior can pair with."""
    prior = PRIORS[prior_name]
    return [name for name, guide in GUIDES.items() if pair_problem(prior, guide) is None]


def _refuse(problem: str, prior_name: str, guide_name: str) -> IncompatiblePairError:
    return IncompatiblePairError(
        f"{problem}; pair prior {prior_name!r} with one of the guides "
        f"{', '.join(compatible_guides(prior_name)) or '(none)'}, or guide {guide_name!r} with one of "
        f"the priors {', '.join(compatible_priors(guide_name)) or '(none)'}"
    )


def check_pair(model: VAE, guide: Guide) -> None:
    """Refuse a pair whose ELBO would not be a bound on log p(x) (see the module doc)."""
    prior = model.prior
    problem = pair_problem(prior, guide)
    if problem:
        raise _refuse(problem, prior.name, guide.name)
    site = guide.discrete_site
    if site is not None and prior.num_components != guide.num_components:
        raise IncompatiblePairError(
            f"guide {guide.name!r} has {guide.num_components} values of {site!r} but prior "
            f"{prior.name!r} has {prior.num_components}; build both with the same --components"
        )
    if tuple(guide.data_shape) != tuple(model.decoder.data_shape):
        raise IncompatiblePairError(
            f"guide {guide.name!r} encodes data of shape {tuple(guide.data_shape)} but the decoder makes "
            f"{tuple(model.decoder.data_shape)}; build both for the same data"
        )


def _probe_size(model: VAE, guide: Guide) -> int:
    # a batch size no other dimension of the pair has, so that a distribution whose
    # batch shape is (B, D) instead of (B,) cannot pass for a batch of D points
    taken = {model.latent_dim, model.decoder.data_dim, model.prior.num_components, guide.num_components}
    return next(n for n in (2, 3, 5, 7, 11, 13, 17, 19, 23) if n not in taken)


def _latent_sites(trace: poutine.Trace) -> dict[str, dict]:
    trace = prune_subsample_sites(trace)  # the data plate's own index site
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    }


def _fix(part: str, kind: str) -> str:
    return f"declare it in {part}'s `sites` (mixvae.sites.Site(name, method{kind}))"


def check_sites(model: VAE, guide: Guide) -> None:
    """Trace the pair's Pyro programs once and compare them with the declared sites.

    Refused, with one line naming the part, the site and the fix: a latent
    site the program samples but does not declare (or the reverse), an
    enumerated site not marked ``infer={"enumerate": "parallel"}`` (or one
    marked but declared continuous), a site method that reads a site not
    declared before it, and a site whose distribution's batch shape is not
    the data plate's (a vector ``z`` without ``.to_event(1)``).
    """
    prior = model.prior
    parts = {"model": f"prior {prior.name!r}", "guide": f"guide {guide.name!r}"}
    declared = {"model": prior.sites, "guide": guide.sites}
    n = _probe_size(model, guide)
    param = next(iter(guide.parameters()), None)
    x = torch.zeros(
        n,
        *model.decoder.data_shape,
        dtype=torch.get_default_dtype() if param is None else param.dtype,
        device=None if param is None else param.device,
    )
    traces: dict[str, poutine.Trace] = {}
    # The probe's draws come from a forked stream: checking a pair leaves the random numbers
    # of whatever follows (training) as they would be without the check.
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.no_grad(), pyro.get_param_store().scope(), torch.random.fork_rng(devices=devices):
        for role, fn in (("guide", guide), ("model", model)):
            program = fn if role == "guide" else poutine.replay(model, trace=traces["guide"])
            try:
                traces[role] = poutine.trace(program).get_trace(x)
            except KeyError as e:
                name = e.args[0] if e.args else "?"
                raise SiteDeclarationError(
                    f"{parts[role]} reads the site {name!r}, which is not declared before the site that "
                    f"reads it; {_fix(parts[role], ', enumerated=True' if role == 'model' else '')}, "
                    "in the order of the story"
                ) from None
            except ValueError as e:
                if "Shape mismatch inside plate" not in str(e):
                    raise
                raise SiteDeclarationError(
                    f"{parts[role]}: {str(e).splitlines()[0]}; a site's distribution must have batch "
                    "shape (points,) in the data plate: make a vector site one event with .to_event(1)"
                ) from None
    for role, trace in traces.items():
        sites = _latent_sites(trace)
        names = [s.name for s in declared[role]]
        for name in sites:
            if name not in names:
                raise SiteDeclarationError(
                    f"{parts[role]} samples the latent site {name!r} but does not declare it; "
                    + _fix(parts[role], ", enumerated=True" if role == "model" else "")
                )
        for site in declared[role]:
            if site.name not in sites:
                if role == "guide" and site.enumerated and site.name in _latent_sites(traces["model"]):
                    continue
                raise SiteDeclarationError(
                    f"{parts[role]} declares the site {site.name!r} but its Pyro program never samples it; "
                    "remove it from `sites` or sample it"
                )
            msg = sites[site.name]
            marked = msg["infer"].get("enumerate") == "parallel"
            if role == "model" and site.name in traces["guide"].nodes:
                marked = site.enumerated  # replayed from the guide: its mark is the guide's
            if site.enumerated and not marked:
                raise SiteDeclarationError(
                    f"{parts[role]} declares {site.name!r} enumerated but its program does not mark it "
                    "infer={'enumerate': 'parallel'}: Pyro would sample it, a looser objective; mark it"
                )
            if marked and not site.enumerated:
                raise SiteDeclarationError(
                    f"{parts[role]} marks {site.name!r} for enumeration but declares it continuous; "
                    "declare it Site(name, method, enumerated=True)"
                )
            batch = tuple(msg["fn"].batch_shape)
            if batch[-1:] != (n,) or any(d != 1 for d in batch[:-1]):
                raise SiteDeclarationError(
                    f"{parts[role]}'s site {site.name!r} has batch shape {batch} for {n} points (event "
                    f"shape {tuple(msg['fn'].event_shape)}); its distribution must have batch shape "
                    f"({n},): make a vector site one event with .to_event(1)"
                )


def _check_param_store(*modules: torch.nn.Module) -> None:
    # Names are unique in a process; the store holds one of them only when it was
    # loaded from a file another process saved.  Pyro would then read some of the
    # new modules' parameters (PyroParams) from that file and others (network
    # weights) from the modules: a silent mix.
    store = pyro.get_param_store()
    for module in modules:
        prefix = f"{module._pyro_name}."
        taken = [name for name in store if name.startswith(prefix)]
        if taken:
            raise ConfigError(
                f"Pyro's parameter store already holds {taken[0]!r} (loaded from a file?); Pyro would mix "
                "those values with the new modules' weights: call pyro.clear_param_store() first, and save "
                "and load models with mixvae.save_model / mixvae.load_model"
            )


def check_names(config: TrainConfig) -> None:
    """Check the names and the pairing of a configuration before any work is done."""
    for registry, name in ((PRIORS, config.prior), (GUIDES, config.guide), (LIKELIHOODS, config.likelihood)):
        registry[name]  # raises UnknownNameError listing the valid names
    if config.network not in (AUTO, GIVEN):
        NETWORKS[config.network]
    problem = pair_problem(PRIORS[config.prior], GUIDES[config.guide])
    if problem:
        raise _refuse(problem, config.prior, config.guide)


#: the most network weights :func:`build` allocates (4 GB of float32): more is a mistake or an attack
MAX_WEIGHTS = 1_000_000_000


def check_size(config: TrainConfig, data_shape: int | tuple[int, ...]) -> None:
    """Refuse, before allocating, networks whose weights would not fit any machine mixvae runs on."""
    shape = data_shape_of(data_shape)
    data_dim = math.prod(shape)
    if not 1 <= data_dim <= MAX_WEIGHTS or len(shape) > 3:
        raise ConfigError(f"data of shape {shape} is not a size mixvae can build")
    network = resolve(config.network, shape)
    if network == "mlp":
        widths = [data_dim, *config.hidden, 2 * config.latent_dim]
        what = f"--hidden {','.join(map(str, config.hidden))} with --latent-dim {config.latent_dim}"
    elif network == "conv" and len(shape) == 3:
        side = max(1, shape[1] >> len(config.conv_channels)) * max(1, shape[2] >> len(config.conv_channels))
        widths = [config.conv_channels[-1] * side, config.conv_features, 2 * config.latent_dim]
        what = f"--conv-channels {','.join(map(str, config.conv_channels))} --conv-features {config.conv_features}"
    else:
        return  # a plugin's network or the user's own modules: their size is their own
    weights = 2 * sum(a * b for a, b in itertools.pairwise(widths))  # encoder and decoder
    if weights > MAX_WEIGHTS:
        raise ConfigError(
            f"{what} on data of shape {shape} would need about {weights / 1e9:.1f} billion weights "
            f"({4 * weights / 2**30:.0f} GiB); choose smaller networks"
        )


def _network(
    config: TrainConfig,
    shape: tuple[int, ...],
    encoder: torch.nn.Module | None,
    decoder: torch.nn.Module | None,
) -> type[Network] | None:
    """The configured network part, or ``None`` for the user's own modules (checked here)."""
    if encoder is not None or decoder is not None:
        if encoder is None or decoder is None:
            raise ConfigError("pass both encoder= and decoder= (your own modules), or neither")
        if config.network not in (AUTO, GIVEN):
            raise ConfigError(
                f"--network {config.network} and your own encoder= / decoder= modules: drop one"
            )
        return None
    if config.network == GIVEN:
        raise ConfigError(
            "this configuration was trained with encoder and decoder modules passed from Python; pass them "
            "again (build(config, shape, encoder=..., decoder=...), load_run(RUN, encoder=..., "
            "decoder=...)), or register the network as a part (mixvae.networks.NETWORKS)"
        )
    network = NETWORKS[resolve(config.network, shape)]
    problem = network.problem(shape)
    if problem:
        raise ConfigError(f"{problem}; choose another --network")
    return network


def build(
    config: TrainConfig,
    data_shape: int | tuple[int, ...],
    *,
    encoder: torch.nn.Module | None = None,
    decoder: torch.nn.Module | None = None,
) -> tuple[VAE, Guide]:
    """The model (prior + decoder) and guide a configuration asks for, checked as a pair
    (:func:`check_pair`) and against their declared sites (:func:`check_sites`).

    :param data_shape: the shape of one data point, ``(P,)`` (or the int P) or ``(C, H, W)``.
    :param encoder: your own encoder body, a module ``(B, *data_shape) -> (B, F)``; the guide
        puts its heads on it.  Give it with ``decoder``; the configuration then records
        ``network="given"``, and loading the run needs the modules again.
    :param decoder: your own decoder network, a module ``(B, D) -> (B, K * first, *rest)``:
        the likelihood's K parameters per value, stacked on the data's first axis.

    ``config.network`` (``auto``: conv for images, mlp for vectors) is
    resolved here and recorded in ``model.config`` (a copy; ``config`` itself
    is left as it was).  The model keeps the configuration as ``model.config``, which :func:`mixvae.save_model` records
    so that :func:`mixvae.load_model` can rebuild the pair in another process.
    """
    config.validate()
    check_names(config)
    check_size(config, data_shape)
    shape = data_shape_of(data_shape)
    network = _network(config, shape, encoder, decoder)
    name = GIVEN if network is None else network.name
    if name != config.network:  # recorded in a copy: the caller's configuration is left as it was
        config = copy.copy(config)
        object.__setattr__(config, "options", dict(config.options))
        config.network = name
    likelihood = LIKELIHOODS[config.likelihood]
    channels = likelihood.param_channels(config)
    # built in the order of mixvae 0.1 (encoder, guide heads, prior, decoder): the same seed
    # gives the same initial weights
    body = given_encoder(encoder, shape) if network is None else network.encoder(config, shape)
    guide = _from_config(GUIDES[config.guide], "guide", config, shape, body)
    prior = _from_config(PRIORS[config.prior], "prior", config, shape, guide)
    net = (
        given_decoder(decoder, config.latent_dim, shape, channels)
        if network is None
        else network.decoder(config, shape, channels)
    )
    decoder_part = _from_config(likelihood, "likelihood", config, shape, net)
    model = VAE(prior, decoder_part)
    if config.weight_init == "glorot":  # (after every part is built: "torch" draws as mixvae 0.1 did)
        glorot_init_(guide, model)
    if config.dtype != "float32":  # --dtype float64: every parameter and buffer
        model.to(torch_dtype(config.dtype))
        guide.to(torch_dtype(config.dtype))
    check_pair(model, guide)
    _check_param_store(model, guide)
    check_sites(model, guide)
    model.config = config  # what mixvae.save_model records to rebuild the pair
    return model, guide


def _from_config(cls: type, kind: str, config: TrainConfig, shape: tuple[int, ...], extra: object) -> object:
    try:
        params = list(inspect.signature(cls.from_config).parameters.values())
    except (TypeError, ValueError):
        params = []
    takes = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(takes) == 2 and not any(p.kind == p.VAR_POSITIONAL for p in params):
        # mixvae 0.1's (config, data_dim): a guide or likelihood that builds its own MLP
        raise PluginError(
            f"{kind} {cls.name!r} ({cls.__module__}) defines from_config(config, data_dim), the mixvae 0.1 "
            f"signature; mixvae 0.2 passes (config, data_shape, {'body' if kind == 'guide' else 'net'}), the "
            "network to put its heads on: see the CHANGELOG",
            module=cls.__module__,
            problem=f"{kind} {cls.name!r} has the 0.1 from_config",
        )
    return cls.from_config(config, shape, extra)
