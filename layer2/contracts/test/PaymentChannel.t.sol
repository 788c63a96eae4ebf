// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {PaymentChannel} from "../src/PaymentChannel.sol";

/// The cheatcodes these tests use (forge's `vm`), declared here so that the
/// tests need nothing but forge.
interface Vm {
    function addr(uint256 pk) external returns (address);
    function sign(uint256 pk, bytes32 digest) external returns (uint8 v, bytes32 r, bytes32 s);
    function prank(address who) external;
    function deal(address who, uint256 amount) external;
    function roll(uint256 n) external;
    function chainId(uint256 id) external;
    function expectRevert(bytes4 sel) external;
    function expectRevert(bytes calldata data) external;
}

/// A recipient that refuses payments.
contract Refuser {
    function openWith(PaymentChannel pc, address b) external payable returns (bytes32) {
        return pc.open{value: msg.value}(b, 1);
    }

    function closeWithDeposits(PaymentChannel pc, bytes32 id) external {
        pc.closeWithDeposits(id);
    }
}

contract PaymentChannelTest {
    Vm constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    uint64 constant WINDOW = 10;
    uint256 constant PK_A = 0xA11CE;
    uint256 constant PK_B = 0xB0B;
    uint256 constant PK_EVE = 0xE5E;
    PaymentChannel pc;
    address a;
    address b;
    address eve;

    function setUp() public {
        pc = new PaymentChannel(WINDOW);
        a = vm.addr(PK_A);
        b = vm.addr(PK_B);
        eve = vm.addr(PK_EVE);
        vm.deal(a, 100 ether);
        vm.deal(b, 100 ether);
        vm.deal(eve, 100 ether);
        vm.roll(100);
    }

    // -- helpers --

    function opened() internal returns (bytes32 id) {
        vm.prank(a);
        id = pc.open{value: 3 ether}(b, 7);
        vm.prank(b);
        pc.join{value: 1 ether}(id);
    }

    function state(bytes32 id, uint64 nonce, uint128 balA, bool fin) internal pure returns (PaymentChannel.State memory) {
        return PaymentChannel.State({channelId: id, nonce: nonce, balanceA: balA, balanceB: 4 ether - balA, isFinal: fin});
    }

    function sig(uint256 pk, bytes32 d) internal returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, d);
        return abi.encodePacked(r, s, v);
    }

    function signed(PaymentChannel.State memory s) internal returns (bytes memory, bytes memory) {
        bytes32 d = pc.digest(s);
        return (sig(PK_A, d), sig(PK_B, d));
    }

    function status(bytes32 id) internal view returns (PaymentChannel.Status st) {
        (,,,, st,,,,) = pc.channels(id);
    }

    // -- paths --

    function test_open_join_and_cooperative_close_pay_both() public {
        bytes32 id = opened();
        require(id == pc.channelId(a, b, 7), "id binds both parties and the salt");
        require(address(pc).balance == 4 ether, "deposits held");
        PaymentChannel.State memory s = state(id, 42, 1.5 ether, true);
        (bytes memory sa, bytes memory sb) = signed(s);
        uint256 a0 = a.balance;
        uint256 b0 = b.balance;
        vm.prank(eve); // anyone may submit what both signed
        pc.cooperativeClose(s, sa, sb);
        require(a.balance == a0 + 1.5 ether && b.balance == b0 + 2.5 ether, "paid");
        require(address(pc).balance == 0, "nothing left");
        require(status(id) == PaymentChannel.Status.Closed, "closed");
    }

    function test_unilateral_close_pays_the_posted_state_after_the_window() public {
        bytes32 id = opened();
        PaymentChannel.State memory s = state(id, 5, 1 ether, false);
        (bytes memory sa, bytes memory sb) = signed(s);
        vm.prank(b);
        pc.close(s, sa, sb);
        vm.roll(100 + WINDOW);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannel.WindowOpen.selector, uint64(100 + WINDOW)));
        pc.finalize(id);
        vm.roll(101 + WINDOW);
        uint256 a0 = a.balance;
        uint256 b0 = b.balance;
        pc.finalize(id);
        require(a.balance == a0 + 1 ether && b.balance == b0 + 3 ether, "paid the posted state");
    }

    function test_an_old_state_is_replaced_by_a_newer_one_in_the_window() public {
        bytes32 id = opened();
        PaymentChannel.State memory old = state(id, 3, 3 ether, false);
        PaymentChannel.State memory latest = state(id, 9, 0.5 ether, false);
        (bytes memory oa, bytes memory ob) = signed(old);
        (bytes memory la, bytes memory lb) = signed(latest);
        vm.prank(a); // a posts the state where it had more
        pc.close(old, oa, ob);
        vm.roll(100 + WINDOW); // last block of the window
        vm.prank(eve); // a watcher may answer for b
        pc.challenge(latest, la, lb);
        // The old state cannot come back.
        vm.expectRevert(abi.encodeWithSelector(PaymentChannel.StaleState.selector, uint64(9), uint64(3)));
        pc.challenge(old, oa, ob);
        vm.roll(101 + WINDOW);
        uint256 b0 = b.balance;
        pc.finalize(id);
        require(b.balance == b0 + 3.5 ether, "b paid in full");
    }

    function test_a_final_state_in_the_window_settles_at_once() public {
        bytes32 id = opened();
        PaymentChannel.State memory s = state(id, 1, 2 ether, false);
        (bytes memory sa, bytes memory sb) = signed(s);
        vm.prank(a);
        pc.close(s, sa, sb);
        PaymentChannel.State memory fin = state(id, 2, 1 ether, true);
        (sa, sb) = signed(fin);
        pc.challenge(fin, sa, sb);
        require(status(id) == PaymentChannel.Status.Closed, "settled");
    }

    function test_close_with_deposits_when_nothing_was_signed() public {
        bytes32 id = opened();
        vm.prank(a);
        pc.closeWithDeposits(id);
        vm.roll(101 + WINDOW);
        uint256 a0 = a.balance;
        pc.finalize(id);
        require(a.balance == a0 + 3 ether, "deposit back");
    }

    function test_cancel_before_join_refunds_the_opener_once() public {
        vm.prank(a);
        bytes32 id = pc.open{value: 2 ether}(b, 1);
        vm.prank(b);
        vm.expectRevert(PaymentChannel.NotAParty.selector);
        pc.cancel(id);
        uint256 a0 = a.balance;
        vm.prank(a);
        pc.cancel(id);
        require(a.balance == a0 + 2 ether, "refunded");
        vm.prank(a);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannel.WrongStatus.selector, PaymentChannel.Status.Closed));
        pc.cancel(id);
        vm.prank(b);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannel.WrongStatus.selector, PaymentChannel.Status.Closed));
        pc.join{value: 1 ether}(id);
    }

    // -- attacks --

    function test_a_stranger_cannot_close() public {
        bytes32 id = opened();
        PaymentChannel.State memory s = state(id, 1, 2 ether, false);
        (bytes memory sa, bytes memory sb) = signed(s);
        vm.prank(eve);
        vm.expectRevert(PaymentChannel.NotAParty.selector);
        pc.close(s, sa, sb);
        vm.prank(eve);
        vm.expectRevert(PaymentChannel.NotAParty.selector);
        pc.closeWithDeposits(id);
        // Nor join a channel opened with someone else.
        vm.prank(a);
        bytes32 pending = pc.open{value: 1 ether}(b, 9);
        vm.prank(eve);
        vm.expectRevert(PaymentChannel.NotAParty.selector);
        pc.join(pending);
    }

    function test_double_finalize_and_close_after_close_are_refused() public {
        bytes32 id = opened();
        PaymentChannel.State memory s = state(id, 1, 2 ether, true);
        (bytes memory sa, bytes memory sb) = signed(s);
        pc.cooperativeClose(s, sa, sb);
        bytes memory closed = abi.encodeWithSelector(PaymentChannel.WrongStatus.selector, PaymentChannel.Status.Closed);
        vm.expectRevert(closed);
        pc.cooperativeClose(s, sa, sb);
        vm.expectRevert(closed);
        pc.finalize(id);
        vm.prank(a);
        vm.expectRevert(closed);
        pc.close(s, sa, sb);
        require(address(pc).balance == 0, "paid once");

        bytes32 id2 = opened2();
        vm.prank(a);
        pc.closeWithDeposits(id2);
        vm.roll(101 + WINDOW);
        pc.finalize(id2);
        vm.expectRevert(closed);
        pc.finalize(id2);
    }

    function opened2() internal returns (bytes32 id) {
        vm.prank(a);
        id = pc.open{value: 1 ether}(b, 8);
        vm.prank(b);
        pc.join(id);
    }

    function test_a_replayed_or_foreign_signature_is_refused() public {
        bytes32 id = opened();
        PaymentChannel.State memory s = state(id, 4, 2 ether, false);
        (bytes memory sa, bytes memory sb) = signed(s);
        // The same signatures on another state.
        PaymentChannel.State memory other = state(id, 5, 2 ether, false);
        vm.prank(a);
        vm.expectRevert(PaymentChannel.BadSignature.selector);
        pc.close(other, sa, sb);
        // Signed by a stranger instead of b.
        bytes memory se = sig(PK_EVE, pc.digest(s));
        vm.prank(a);
        vm.expectRevert(PaymentChannel.BadSignature.selector);
        pc.close(s, sa, se);
        // Both signatures by a.
        vm.prank(a);
        vm.expectRevert(PaymentChannel.BadSignature.selector);
        pc.close(s, sa, sa);
        // The malleable twin of a valid signature (s' = n - s, v flipped).
        (uint8 v, bytes32 r, bytes32 ss) = vm.sign(PK_B, pc.digest(s));
        uint256 n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        bytes memory twin = abi.encodePacked(r, bytes32(n - uint256(ss)), v == 27 ? uint8(28) : uint8(27));
        vm.prank(a);
        vm.expectRevert(PaymentChannel.BadSignature.selector);
        pc.close(s, sa, twin);
        // Balances that do not sum to the deposits.
        PaymentChannel.State memory inflated = PaymentChannel.State(id, 6, 4 ether, 4 ether, false);
        (bytes memory ia, bytes memory ib) = signed(inflated);
        vm.prank(a);
        vm.expectRevert(PaymentChannel.BadBalances.selector);
        pc.close(inflated, ia, ib);
    }

    function test_a_state_of_another_channel_chain_or_contract_is_refused() public {
        bytes32 id = opened();
        bytes32 id2 = opened2();
        // Signed for channel 1, posted as channel 2.
        PaymentChannel.State memory s = state(id, 3, 2 ether, false);
        (bytes memory sa, bytes memory sb) = signed(s);
        PaymentChannel.State memory as2 = PaymentChannel.State(id2, 3, 2 ether, 2 ether, false);
        vm.prank(a);
        vm.expectRevert(PaymentChannel.BadBalances.selector); // channel 2 holds 1 ether
        pc.close(as2, sa, sb);
        as2 = PaymentChannel.State(id2, 3, 0.5 ether, 0.5 ether, false);
        vm.prank(a);
        vm.expectRevert(PaymentChannel.BadSignature.selector);
        pc.close(as2, sa, sb);
        // Signed on another chain.
        vm.chainId(1);
        (bytes memory ca, bytes memory cb) = signed(s);
        vm.chainId(31337);
        vm.prank(a);
        vm.expectRevert(PaymentChannel.BadSignature.selector);
        pc.close(s, ca, cb);
        // Signed for another deployment of the contract.
        PaymentChannel other = new PaymentChannel(WINDOW);
        bytes32 d = other.digest(s);
        vm.prank(a);
        vm.expectRevert(PaymentChannel.BadSignature.selector);
        pc.close(s, sig(PK_A, d), sig(PK_B, d));
        // The right signatures still work.
        vm.prank(a);
        pc.close(s, sa, sb);
    }

    function test_a_challenge_after_the_window_or_by_an_old_state_is_refused() public {
        bytes32 id = opened();
        PaymentChannel.State memory s5 = state(id, 5, 2 ether, false);
        PaymentChannel.State memory s6 = state(id, 6, 1 ether, false);
        (bytes memory a5, bytes memory b5) = signed(s5);
        (bytes memory a6, bytes memory b6) = signed(s6);
        vm.prank(a);
        pc.close(s5, a5, b5);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannel.StaleState.selector, uint64(5), uint64(5)));
        pc.challenge(s5, a5, b5);
        vm.roll(101 + WINDOW);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannel.WindowClosed.selector, uint64(100 + WINDOW)));
        pc.challenge(s6, a6, b6);
    }

    function test_a_recipient_that_refuses_payment_can_withdraw_later() public {
        Refuser r = new Refuser();
        vm.deal(address(r), 0);
        bytes32 id = r.openWith{value: 1 ether}(pc, b);
        vm.prank(b);
        pc.join(id);
        r.closeWithDeposits(pc, id);
        vm.roll(101 + WINDOW);
        pc.finalize(id); // not blocked by the refusing party
        require(pc.owed(address(r)) == 1 ether, "owed");
    }

    function test_unknown_channel() public {
        vm.expectRevert(PaymentChannel.UnknownChannel.selector);
        pc.finalize(bytes32(uint256(1)));
    }
}
