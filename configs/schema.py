"""One frozen dataclass per concern. Every field is commented; presets live in presets.py.

A run writes the resolved `RunConfig` as `config.json` beside its results, so every figure
can be traced to the exact settings that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DataConfig:
    """Where the per-user text comes from and how it is split and tokenized."""

    source: str = "synthetic"  # "synthetic" or "jsonl:PATH" (gzip or plain JSONL of {"user","text"})
    seed: int = 0  # seeds the simulator and the user splits
    num_users: int = 300  # synthetic: population size; jsonl: ignored (see max_users)
    max_users: int = 0  # jsonl: keep at most this many users (0 = all)
    min_messages: int = 1  # drop users with fewer messages than this
    max_messages_per_user: int = 0  # truncate each user's history (0 = no cap)
    heldout_fraction: float = 0.1  # users kept out of training, for evaluation
    proxy_fraction: float = 0.1  # users disjoint from both, used only to train the vocabulary
    vocab_size: int = 2000  # SentencePiece word vocabulary size, specials included
    seq_len: int = 20  # tokens per training example (Stack Overflow baseline uses 20)


@dataclass(frozen=True)
class ModelConfig:
    """The next-word LSTM (nanoGPT-style: the whole model in model/nwp.py)."""

    embedding_dim: int = 64  # tied input/output embedding width
    lstm_units: int = 256  # recurrent width
    cell: str = "lstm"  # "lstm" (TFF Stack Overflow baseline) or "cifg" (Gboard)


@dataclass(frozen=True)
class TrainConfig:
    """The federated algorithm: client work, aggregation and server optimizer. The TFF simulation
    and the collector (the plan it hands to phones, its aggregation and its server step) both
    read this one section (fedcore/algorithm.py)."""

    algorithm: str = "fedavg"  # fedavg, fedavgm, fedadam, fedyogi or fedprox (all through tff.learning)
    rounds: int = 20  # federated rounds
    clients_per_round: int = 10  # clients sampled each round
    local_epochs: int = 1  # passes over each client's data per round
    batch_size: int = 16  # client batch size
    client_learning_rate: float = 0.5  # client SGD step size
    server_learning_rate: float = 1.0  # server SGD step size on the averaged delta
    max_examples_per_client: int = 256  # cap on sequences a client trains on per round (0 = no cap)
    eval_every: int = 5  # evaluate on held-out users every this many rounds
    eval_max_examples: int = 4000  # held-out sequences used by each evaluation (0 = all)
    seed: int = 0  # client sampling seed
    client_momentum: float = 0.0  # client SGD momentum (0 = plain SGD, as the phones run)
    client_grad_clip: float = 0.0  # clip each client SGD step's gradient to this global L2 norm (0 = off)
    server_momentum: float = 0.0  # fedavgm: Nesterov momentum (Gboard: 0.9, lr 1.0); fedavg: heavy-ball if > 0
    server_beta_1: float = 0.9  # fedadam/fedyogi: first-moment decay
    server_beta_2: float = 0.99  # fedadam/fedyogi: second-moment decay (Reddi et al. 2021)
    server_epsilon: float = 1e-3  # fedadam/fedyogi: adaptivity tau (Reddi et al. 2021)
    server_lr_schedule: str = "constant"  # "constant", or "cosine": half cosine from server_learning_rate to 0 over `rounds`
    aggregator: str = "auto"  # "weighted_mean" (by examples), "uniform_mean", a registered rule, "pkg.mod:Class"; auto: uniform iff DP noise
    proximal_strength: float = 0.01  # fedprox: weight mu of the proximal term
    selection: str = "uniform"  # "uniform" (sample_clients), "availability" (eligible, over-selected) or "epoch" (passes over the shuffled users)
    over_selection: float = 1.3  # availability: devices selected = ceil(clients_per_round * this)
    dropout_rate: float = -1.0  # availability: share of selected clients dropping out (-1 = each profile's own)
    round_interval_s: float = 3600.0  # availability: simulated seconds between round starts
    sim_start_h: float = 0.0  # availability: simulated UTC hour of round 0
    min_client_examples: int = 1  # availability: a client needs this many examples to be eligible
    checkpoint_every: int = 5  # save resumable state every this many rounds (0 = only at the end)
    tensorboard: bool = True  # write TensorBoard events under OUT/tensorboard


@dataclass(frozen=True)
class PrivacyConfig:
    """Clipping and Gaussian noise on device updates (DP-FedAvg, McMahan et al. 2018)."""

    mode: str = "device"  # "none", or "device": each device clips and adds its share of noise
    clip_norm: float = 1.0  # L2 bound C on one device's update
    noise_multiplier: float = 0.0  # z: the aggregate sum carries N(0, (z*C)^2) per coordinate
    dp: str = "none"  # TFF simulation: "none", "fixed" (clip_norm), "adaptive" (clip_norm is the initial clip) or "ftrl" (DP-FTRL tree noise)
    restart_every: int = 0  # ftrl: rounds per tree, dividing the rounds of one pass over the users (0 = one tree per pass)
    target_unclipped_quantile: float = 0.5  # adaptive: share of updates left unclipped (Andrew et al. 2021)
    clip_learning_rate: float = 0.2  # adaptive: geometric clip update rate (Andrew et al. 2021)
    delta: float = 0.0  # target delta for epsilon (0 = 1 / N^1.1, N = training users)


@dataclass(frozen=True)
class ServerConfig:
    """The update collector and the plan it hands to devices."""

    host: str = "127.0.0.1"  # bind address (loopback by default)
    port: int = 0  # 0 = pick a free port
    workers: int = 1  # gunicorn worker processes
    threads: int = 4  # threads per worker
    goal_count: int = 8  # reports that close a round
    over_selection: float = 1.3  # devices accepted per round = ceil(goal_count * over_selection)
    max_body_bytes: int = 64 * 1024 * 1024  # uploads larger than this get 413
    norm_slack: float = 6.0  # t: accept ||update|| <= sqrt(C^2 + s^2 dim) + t*s (chi bound; honest refused w.p. <= exp(-t^2/2))
    retry_after_s: int = 1  # suggested wait for devices turned away
    # plan: update encoding ("float32", "int8", "topk:F", "topk_int8:F", "hadamard:BITS",
    # "hadamard_sr:LEVELS"; fedmath/encodings.py); the collector decodes any of them
    encoding: str = "float32"


@dataclass(frozen=True)
class CollectorConfig:
    """The collector's round lifecycle (Bonawitz et al. 2019), DP accounting and storage; its plan,
    aggregation and server step come from `train` (local epochs, batch size, client and server
    learning rates, `max_examples_per_client` as the cap on examples an upload may claim)."""

    report_deadline_s: float = 600.0  # reporting window, counted from the round's first accepted check-in
    min_reports: int = 0  # reports needed to publish at the deadline (0 = goal_count); fewer: round abandoned
    norm_policy: str = "reject"  # update above the plausible norm: "reject" (400) or "reclip" it to that norm
    population: int = 0  # N for q = goal_count / N and the default delta 1/N^1.1 (0 = registered devices)
    checkpoint_every: int = 32  # write the running sum to disk every this many accepted updates
    durability: str = "process"  # "process": survives kill -9 (page cache); "power": also fsync every write
    # where the collector's records live: "" = SQLite in state_dir (the processes of one host);
    # "postgresql://USER@HOST:PORT/DB" = a PostgreSQL database that several collector hosts share
    # (server/storage_pg.py; they must also share state_dir, which holds the spool and the models)
    database: str = ""
    rate_limit_per_s: float = 5.0  # per-device token bucket refill rate (requests per second)
    rate_limit_burst: int = 30  # per-device token bucket size
    register_rate_per_s: float = 50.0  # registrations per second per client address
    register_burst: int = 2000  # registration bucket size per client address
    max_retry_after_s: int = 600  # upper bound on the Retry-After handed to turned-away devices
    metrics_flush_s: float = 1.0  # how often a worker writes its request counters to SQLite
    # registration: "required" (a certificate from the platform issuer and a proof of the device
    # key), or "off" (any caller may register a new id: tests and benchmarks with fake bundles)
    attestation: str = "required"
    attestation_public_key: str = ""  # the issuer's Ed25519 public key: 64 hex digits, or a file holding them
    max_devices_per_attestation: int = 2  # device ids one attested physical device may register
    token_ttl_s: float = 86400.0  # a bearer token expires this long after it was issued (0 = never)
    # the /keyboard page: the latest published model's suggestions for anyone who can reach the
    # collector (the same model every phone downloads; docs/privacy.md), rate-limited per address
    keyboard: bool = True
    keyboard_rate_per_s: float = 20.0  # suggestion requests per second per client address
    keyboard_burst: int = 40  # suggestion bucket size per client address

    # the round policy: "sync" (fedcore.SyncRounds) or "fedbuff" (fedcore.buffered.BufferedAsync:
    # a version every server.goal_count accepted updates, from devices on any recent version)
    policy: str = "sync"
    concurrency: int = 0  # fedbuff: devices training at once (0 = ceil(goal_count * over_selection))
    max_staleness: int = 10  # fedbuff: refuse an update trained more than this many versions ago
    staleness_weight: str = "polynomial:a=0.5"  # fedbuff: "constant", "polynomial:a=A", "hinge:a=A,b=B"
    # fedbuff: report_deadline_s is how long an admitted device holds its concurrency slot
    # hierarchy (server/edge.py): the root collector's URL makes this collector an edge that
    # forwards each round's partial aggregate there and adopts the root's versions ("" = a root or flat)
    upstream: str = ""
    upstream_device_id: str = ""  # edge: its client id at the root ("" = edge-<state dir name>)
    upstream_timeout_s: float = 300.0  # edge: how long a close waits for the root's next version


@dataclass(frozen=True)
class SecAggConfig:
    """Secure aggregation (SecAgg+, secagg/ and server/secure_rounds.py): the collector learns only
    the sum of a round's quantized updates. Off by default."""

    enabled: bool = False  # rounds run the four secure stages instead of plain uploads
    bits: int = 32  # b: updates are summed in Z_(2^b) (2..32); below 32 they travel bit-packed
    coord_bound: float = 0.0  # B: clip each coordinate to [-B, B] before quantizing (0 = privacy.clip_norm)
    dropout: float = 0.1  # expected share of devices dropping per stage: picks the graph degree and threshold
    corrupt: float = 0.05  # share of devices assumed to collude with the server (security bound)
    security_bits: float = 40.0  # P[colluders hold t shares of an honest device's secret] <= 2^-this
    correctness_bits: float = 20.0  # P[a neighbourhood falls below t survivors] <= 2^-this
    min_devices: int = 3  # fewer devices at any stage: the round is abandoned
    stage_timeout_s: float = 60.0  # a stage closes when all it waits on answered, or after this long without a message


@dataclass(frozen=True)
class DeviceConfig:
    """The simulated phone fleet."""

    num_devices: int = 12  # phones, one per training user
    rounds: int = 2  # on-device rounds to run against the server
    concurrency: int = 2  # phones training at once
    seed: int = 0  # noise and selection seed


@dataclass(frozen=True)
class ExportConfig:
    """The phone bundle."""

    top_k: int = 3  # suggestions returned by the inference model


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how the TFF simulation executes its rounds (never what it computes: the same
    weights come out whatever is set here; federated/workers.py)."""

    workers: str = ""  # TFF worker addresses "HOST:PORT,HOST:PORT" (`fedkeys worker`); "" = one local worker
    client_concurrency: int = 0  # clients a local worker trains at once (0 = the CPUs this process may use)
    intra_op_threads: int = 0  # TensorFlow threads inside one client's ops (0 = CPUs / client_concurrency)


@dataclass(frozen=True)
class AttackConfig:
    """Malicious clients in the TFF simulation (federated/attackers.py): a share of the training
    users train on poisoned data. The update-level attacks (scaling, sign flip, noise: a device
    sending something other than what it trained) run on the phones' path (device_sim/attacker.py,
    benchmarks/poisoning.py). Off by default."""

    kind: str = "none"  # none | data_poison (every label moved to another word) | backdoor (trigger -> target planted)
    share: float = 0.0  # share of the training users who attack (at least one when > 0)
    trigger: str = "can you pick up"  # backdoor: the trigger context (words of the vocabulary)
    target: str = "homework"  # backdoor: the word the attackers want suggested after the trigger
    poison_fraction: float = 0.5  # backdoor: share of an attacker's examples with the trigger planted
    seed: int = 0  # who attacks, and which examples are planted


@dataclass(frozen=True)
class RunConfig:
    """Everything a run used, written as config.json beside its results."""

    preset: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    devices: DeviceConfig = field(default_factory=DeviceConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
