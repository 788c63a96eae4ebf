// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title Two-party payment channels settled by co-signed states.
/// @notice A channel holds both parties' deposits. Off chain they co-sign
/// states (EIP-712 typed data: channel id, nonce, both balances, whether it
/// is final). A final state signed by both closes the channel at once
/// (cooperative close). Either party may instead post its latest co-signed
/// state (unilateral close); for `challengeBlocks` blocks anyone may replace
/// it with a co-signed state of a higher nonce (what a watcher does when a
/// counterparty posts an old one); after that window anyone may finalize,
/// which pays the posted balances. Every payout happens once: a channel's
/// status moves forward only, and is set before any transfer.
contract PaymentChannel {
    enum Status {
        None,
        Opening,
        Open,
        Closing,
        Closed
    }

    struct Channel {
        address a;
        address b;
        uint128 depositA;
        uint128 depositB;
        Status status;
        uint64 nonce;
        uint64 deadline;
        uint128 balanceA;
        uint128 balanceB;
    }

    /// @notice What both parties sign.
    struct State {
        bytes32 channelId;
        uint64 nonce;
        uint128 balanceA;
        uint128 balanceB;
        bool isFinal;
    }

    bytes32 public constant STATE_TYPEHASH =
        keccak256("State(bytes32 channelId,uint64 nonce,uint128 balanceA,uint128 balanceB,bool isFinal)");
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    /// secp256k1n / 2: a larger `s` is the malleable twin of a valid signature.
    uint256 private constant HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    /// @notice Blocks a posted state can be challenged for.
    uint64 public immutable challengeBlocks;
    mapping(bytes32 => Channel) public channels;
    /// @notice Payouts a recipient refused (a contract that reverts): theirs to withdraw.
    mapping(address => uint256) public owed;

    event Opened(bytes32 indexed id, address indexed a, address indexed b, uint128 depositA);
    event Joined(bytes32 indexed id, uint128 depositB);
    event Cancelled(bytes32 indexed id);
    event Closing(bytes32 indexed id, address closer, uint64 nonce, uint128 balanceA, uint128 balanceB, uint64 deadline);
    event Challenged(bytes32 indexed id, uint64 nonce, uint128 balanceA, uint128 balanceB);
    event Closed(bytes32 indexed id, uint64 nonce, uint128 balanceA, uint128 balanceB);

    error UnknownChannel();
    error WrongStatus(Status got);
    error NotAParty();
    error ChannelExists();
    error BadBalances();
    error BadSignature();
    error StaleState(uint64 posted, uint64 got);
    error NotFinal();
    error WindowClosed(uint64 deadline);
    error WindowOpen(uint64 deadline);
    error TransferFailed();

    constructor(uint64 challengeBlocks_) {
        require(challengeBlocks_ > 0, "challenge window of 0 blocks");
        challengeBlocks = challengeBlocks_;
    }

    /// @notice The id of the channel `a` opens with `b` under `salt`.
    function channelId(address a, address b, uint64 salt) public pure returns (bytes32) {
        return keccak256(abi.encode(a, b, salt));
    }

    /// @notice EIP-712 domain: this contract on this chain.
    function domainSeparator() public view returns (bytes32) {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("vigil-channel"), keccak256("1"), block.chainid, address(this))
        );
    }

    /// @notice The digest both parties sign for `s`.
    function digest(State calldata s) public view returns (bytes32) {
        bytes32 structHash =
            keccak256(abi.encode(STATE_TYPEHASH, s.channelId, s.nonce, s.balanceA, s.balanceB, s.isFinal));
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    /// @notice `msg.sender` opens a channel with `b`, depositing `msg.value`.
    function open(address b, uint64 salt) external payable returns (bytes32 id) {
        require(b != address(0) && b != msg.sender, "counterparty");
        id = channelId(msg.sender, b, salt);
        if (channels[id].status != Status.None) revert ChannelExists();
        channels[id] = Channel({
            a: msg.sender,
            b: b,
            depositA: uint128(msg.value),
            depositB: 0,
            status: Status.Opening,
            nonce: 0,
            deadline: 0,
            balanceA: 0,
            balanceB: 0
        });
        emit Opened(id, msg.sender, b, uint128(msg.value));
    }

    /// @notice The counterparty joins, depositing `msg.value`: the channel is open.
    function join(bytes32 id) external payable {
        Channel storage c = _channel(id, Status.Opening);
        if (msg.sender != c.b) revert NotAParty();
        c.depositB = uint128(msg.value);
        c.status = Status.Open;
        emit Joined(id, uint128(msg.value));
    }

    /// @notice The opener takes its deposit back while nobody joined.
    function cancel(bytes32 id) external {
        Channel storage c = _channel(id, Status.Opening);
        if (msg.sender != c.a) revert NotAParty();
        c.status = Status.Closed;
        emit Cancelled(id);
        _pay(c.a, c.depositA);
    }

    /// @notice Closes at once with a final state both signed.
    function cooperativeClose(State calldata s, bytes calldata sigA, bytes calldata sigB) external {
        Channel storage c = _channel(s.channelId, Status.Open);
        if (!s.isFinal) revert NotFinal();
        _check(c, s, sigA, sigB);
        _settle(c, s);
    }

    /// @notice A party posts the latest state both signed; it can be replaced
    /// by a higher nonce for `challengeBlocks` blocks.
    function close(State calldata s, bytes calldata sigA, bytes calldata sigB) external {
        Channel storage c = _channel(s.channelId, Status.Open);
        if (msg.sender != c.a && msg.sender != c.b) revert NotAParty();
        _check(c, s, sigA, sigB);
        _post(c, s.channelId, s.nonce, s.balanceA, s.balanceB);
    }

    /// @notice A party closes with the deposits as they are (nonce 0): for a
    /// counterparty that never signed a state.
    function closeWithDeposits(bytes32 id) external {
        Channel storage c = _channel(id, Status.Open);
        if (msg.sender != c.a && msg.sender != c.b) revert NotAParty();
        _post(c, id, 0, c.depositA, c.depositB);
    }

    /// @notice Replaces the posted state with a co-signed one of a higher
    /// nonce inside the window; anyone may send it (a watcher).
    function challenge(State calldata s, bytes calldata sigA, bytes calldata sigB) external {
        Channel storage c = _channel(s.channelId, Status.Closing);
        if (block.number > c.deadline) revert WindowClosed(c.deadline);
        if (s.nonce <= c.nonce) revert StaleState(c.nonce, s.nonce);
        _check(c, s, sigA, sigB);
        c.nonce = s.nonce;
        c.balanceA = s.balanceA;
        c.balanceB = s.balanceB;
        emit Challenged(s.channelId, s.nonce, s.balanceA, s.balanceB);
        if (s.isFinal) {
            _settle(c, s);
        }
    }

    /// @notice Pays the posted state once the window is over; anyone may call.
    function finalize(bytes32 id) external {
        Channel storage c = _channel(id, Status.Closing);
        if (block.number <= c.deadline) revert WindowOpen(c.deadline);
        c.status = Status.Closed;
        emit Closed(id, c.nonce, c.balanceA, c.balanceB);
        _pay(c.a, c.balanceA);
        _pay(c.b, c.balanceB);
    }

    /// @notice Takes what a refused payout left owed to `msg.sender`.
    function withdraw() external {
        uint256 amount = owed[msg.sender];
        owed[msg.sender] = 0;
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }

    function _channel(bytes32 id, Status want) private view returns (Channel storage c) {
        c = channels[id];
        if (c.status == Status.None) revert UnknownChannel();
        if (c.status != want) revert WrongStatus(c.status);
    }

    function _check(Channel storage c, State calldata s, bytes calldata sigA, bytes calldata sigB) private view {
        if (uint256(s.balanceA) + uint256(s.balanceB) != uint256(c.depositA) + uint256(c.depositB)) {
            revert BadBalances();
        }
        bytes32 d = digest(s);
        if (_signer(d, sigA) != c.a || _signer(d, sigB) != c.b) revert BadSignature();
    }

    function _signer(bytes32 d, bytes calldata sig) private pure returns (address) {
        if (sig.length != 65) revert BadSignature();
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (uint256(s) > HALF_N || (v != 27 && v != 28)) revert BadSignature();
        address who = ecrecover(d, v, r, s);
        if (who == address(0)) revert BadSignature();
        return who;
    }

    function _post(Channel storage c, bytes32 id, uint64 nonce, uint128 balanceA, uint128 balanceB) private {
        c.status = Status.Closing;
        c.nonce = nonce;
        c.balanceA = balanceA;
        c.balanceB = balanceB;
        c.deadline = uint64(block.number) + challengeBlocks;
        emit Closing(id, msg.sender, nonce, balanceA, balanceB, c.deadline);
    }

    function _settle(Channel storage c, State calldata s) private {
        c.status = Status.Closed;
        c.nonce = s.nonce;
        c.balanceA = s.balanceA;
        c.balanceB = s.balanceB;
        emit Closed(s.channelId, s.nonce, s.balanceA, s.balanceB);
        _pay(c.a, s.balanceA);
        _pay(c.b, s.balanceB);
    }

    /// Pays `amount` to `to`; a recipient that refuses it can withdraw it later.
    function _pay(address to, uint256 amount) private {
        if (amount == 0) return;
        (bool ok,) = to.call{value: amount, gas: 10_000}("");
        if (!ok) owed[to] += amount;
    }
}
